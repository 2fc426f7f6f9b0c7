"""Reading image files safely: which files count as images, and loading with clear errors."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from promptlab.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# PIL's openers for those formats (JPEG's also opens the multi-picture MPO files many cameras write).
# Other decoders are never tried, whatever a file's extension says (EPS, for one, would run Ghostscript).
READ_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
READABLE = "JPEG, PNG, BMP, GIF, WebP or TIFF"
# One pixel limit for every entry point, below PIL's own decompression-bomb limit (89.5 Mpx): 64 Mpx
# takes any camera photo (a 61-megapixel sensor writes 60.2 Mpx) and about 192 MB decoded as RGB.
MAX_IMAGE_PIXELS = 64_000_000


class ImageLoadError(UserError):
    """An image file cannot be decoded; the message names the file and the fix."""


def is_image_file(path: Path) -> bool:
    """True for files whose extension is a supported image format (hidden files excluded)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files inside ``folder`` (and its subfolders when ``recursive``), sorted; other files are
    skipped with a warning."""
    images, skipped = [], []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if is_image_file(path):
            images.append(path)
        elif path.is_file() and not path.name.startswith("."):
            skipped.append(path.name)
    if skipped:
        log.warning(
            "Skipped %d non-image file(s) in %s (e.g. %s); supported extensions: %s.",
            len(skipped), folder, skipped[0], ", ".join(sorted(IMAGE_EXTENSIONS)),
        )
    return images


def load_image(path: str | Path) -> Image.Image:
    """Opens an image as RGB, fully decoded, so truncated files fail here and not mid-batch.

    Raises:
        ImageLoadError: the file is missing, not one of the formats promptlab reads, truncated or
            corrupt, larger than :data:`MAX_IMAGE_PIXELS`, or its decoder failed in any other way.
    """
    return _decode(path, str(path))[0]


def decode_image_bytes(data: bytes, name: str) -> tuple[Image.Image, str]:
    """Decodes an uploaded image like :func:`load_image`, naming it ``name`` in errors.

    Returns:
        The RGB image and PIL's name for its format (``PNG``, ``JPEG``...).
    """
    return _decode(io.BytesIO(data), name)


def _decode(source: str | Path | io.BytesIO, name: str) -> tuple[Image.Image, str]:
    """The one place promptlab decodes images (the app, the API, classify, serve and the loaders)."""
    Image.init()  # registers every decoder plugin (a no-op after the first call): READ_FORMATS names some
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=READ_FORMATS) as image:
                width, height = image.size  # from the header: nothing is decoded yet
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(
                        f"Cannot read image {name!r}: it declares {width} x {height} pixels "
                        f"({width * height / 1e6:.0f} Mpx), more than promptlab's limit of "
                        f"{MAX_IMAGE_PIXELS // 1_000_000} Mpx, which guards against decompression bombs; "
                        "downscale it first."
                    )
                image.load()
                return image.convert("RGB"), str(image.format)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as error:  # its message names a Python object, not the file
        raise ImageLoadError(
            f"Cannot read image {name!r}: not a {READABLE} image; replace or remove the file."
        ) from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        detail = str(error).rstrip(".")
        raise ImageLoadError(f"Cannot read image {name!r}: {detail}; replace or remove the file.") from error
    except Exception as error:  # a decoder's own failure (NotImplementedError...) is this file's, never the caller's
        detail = f"{type(error).__name__}: {str(error).rstrip('.')}"
        raise ImageLoadError(f"Cannot read image {name!r}: its decoder failed ({detail}); replace or remove the file.") from error
