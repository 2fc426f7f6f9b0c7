"""Reading image files safely: which files count as images, and loading with clear errors."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from promptlab.data.uris import UriReadError, is_uri, read_uri
from promptlab.errors import UserError

log = logging.getLogger(__name__)
# Pillow's warnings while decoding: kept out of the terminal (not propagated); `promptlab classify`
# writes them to its decoder log, and Python API users may attach a handler.
decoder_log = logging.getLogger("promptlab.decoder")
decoder_log.propagate = False
decoder_log.addHandler(logging.NullHandler())  # without a handler, Python would print its errors to stderr


class _ToDecoderLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        decoder_log.handle(record)


# Pillow also logs decoder trouble itself (PIL.TiffImagePlugin at ERROR for a damaged TIFF): those
# records join its warnings in the decoder log instead of the terminal.
_pil_log = logging.getLogger("PIL")
_pil_log.propagate = False
if not any(isinstance(handler, _ToDecoderLog) for handler in _pil_log.handlers):
    _pil_log.addHandler(_ToDecoderLog())

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# PIL's openers for those formats (JPEG's also opens the multi-picture MPO files many cameras write).
# Other decoders are never tried, whatever a file's extension says (EPS, for one, would run Ghostscript).
READ_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
READABLE = "JPEG, PNG, BMP, GIF, WebP or TIFF"
# One pixel limit for every entry point, below PIL's own decompression-bomb limit (89.5 Mpx): 64 Mpx
# takes any camera photo (a 61-megapixel sensor writes 60.2 Mpx) and about 192 MB decoded as RGB.
MAX_IMAGE_PIXELS = 64_000_000
_warnings_lock = threading.Lock()


class ImageLoadError(UserError):
    """An image file cannot be decoded; the message names the file and the fix."""


def is_image_file(path: Path) -> bool:
    """True for files whose extension is a supported image format (hidden files excluded)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files inside ``folder`` (and its subfolders when ``recursive``), sorted; other files are
    skipped with a warning.
    """
    images, skipped = [], []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if is_image_file(path):
            images.append(path)
        elif path.is_file() and not path.name.startswith("."):
            skipped.append(path.name)
    if skipped:
        log.warning(
            "Skipped %d non-image file(s) in %s (e.g. %s); supported extensions: %s.",
            len(skipped),
            folder,
            skipped[0],
            ", ".join(sorted(IMAGE_EXTENSIONS)),
        )
    return images


def load_image(path: str | Path) -> Image.Image:
    """Opens an image as RGB, fully decoded, so truncated files fail here and not mid-batch.

    Args:
        path: a file, or a URI (``s3://``, ``https://``...) read with :mod:`promptlab.data.uris`.

    Raises:
        ImageLoadError: the file is missing, not one of the formats promptlab reads, truncated or
            corrupt, larger than :data:`MAX_IMAGE_PIXELS`, or its decoder failed in any other way.
    """
    if isinstance(path, str) and is_uri(path):
        try:
            return decode_image_bytes(read_uri(path), path)[0]
        except UriReadError as error:
            raise ImageLoadError(str(error)) from error
    if not Path(path).is_file():
        what = "is a folder, not an image file" if Path(path).is_dir() else "not found"
        raise ImageLoadError(f"Image {str(path)!r} {what}; check the path.")
    return _decode(path, str(path))[0]


def decode_image_bytes(data: bytes, name: str) -> tuple[Image.Image, str]:
    """Decodes an uploaded image like :func:`load_image`, naming it ``name`` in errors.

    Returns:
        The RGB image and PIL's name for its format (``PNG``, ``JPEG``...).
    """
    return _decode(io.BytesIO(data), name)


# Fragments of Pillow's decoder messages that mean the data ends early or is damaged.
CORRUPT_MARKERS = (
    "truncated",
    "buffer overrun",
    "decoder error",
    "negative seek",
    "data stream",
    "end of file",
    "eof",
    "premature end",
    "corrupt",
    "invalid",
    "bad ",
    "unexpected",
    "error -",
    "crc",
    "checksum",
)
# ... and fragments that mean a valid file in a variant Pillow cannot decode.
UNSUPPORTED_MARKERS = ("unsupported", "not supported", "unknown", "unrecognized", "not implemented", "cannot handle")


def plain_reason(error: BaseException, image_format: str | None) -> str:
    """A decoder failure in a few plain words: truncated or corrupt, an unsupported variant, too large."""
    message = str(error).lower()
    if isinstance(error, Image.DecompressionBombError):  # PIL refuses at twice its own limit, before ours
        return f"it is too large (promptlab reads up to {MAX_IMAGE_PIXELS // 1_000_000} Mpx)"
    unsupported = f"it is a variant of {image_format or 'its format'} that promptlab's image library cannot decode"
    if isinstance(error, NotImplementedError):
        return unsupported
    if any(marker in message for marker in CORRUPT_MARKERS):
        return "the file is truncated or corrupt"
    if any(marker in message for marker in UNSUPPORTED_MARKERS):
        return unsupported
    if isinstance(error, (OSError, SyntaxError)):
        return "the file is truncated or corrupt"
    return "its decoder failed"


def _decode(source: str | Path | io.BytesIO, name: str) -> tuple[Image.Image, str]:
    """The one place promptlab decodes images (the app, the API, classify, serve and the loaders).

    Every failure becomes one :class:`ImageLoadError`: a plain reason, then the decoder's own words.
    """
    Image.init()  # registers every decoder plugin (a no-op after the first call): READ_FORMATS names some
    state: dict[str, str | None] = {"format": None}
    # Pillow's own warnings (corrupt EXIF, truncated reads...) go to the decoder log, never the
    # terminal. catch_warnings swaps process-wide state, so decodes in threads take turns here.
    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _open_and_load(source, name, state)
        except ImageLoadError:
            raise
        except UnidentifiedImageError as error:  # its message names a Python object, not the file
            signed = format_by_signature(source)
            what = (
                f"it is a variant of {signed} that promptlab's image library cannot decode"
                if signed
                else f"not a {READABLE} image"
            )
            raise ImageLoadError(f"Cannot read image {name!r}: {what}; replace or remove the file.") from error
        except Exception as error:  # any decoder failure is this file's, never the caller's (NotImplementedError...)
            detail = f"{type(error).__name__}: {str(error).rstrip('.')}" if str(error) else type(error).__name__
            reason = plain_reason(error, state["format"])
            raise ImageLoadError(
                f"Cannot read image {name!r}: {reason} ({detail}); replace or remove the file."
            ) from error
        finally:
            for warning in caught:
                decoder_log.info("%s: %s", name, warning.message)


# The first bytes of each format promptlab reads: a file that starts so but that no opener accepts is a
# variant of that format (a TIFF with 100 samples per pixel), not some other kind of file.
SIGNATURES = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def format_by_signature(source: str | Path | io.BytesIO) -> str | None:
    """The format an image file's first bytes announce (None when they announce none promptlab reads)."""
    if isinstance(source, io.BytesIO):
        return image_format_of(source.getvalue()[:12])
    with open(source, "rb") as file:
        return image_format_of(file.read(12))


def image_format_of(head: bytes) -> str | None:
    """The format that a file's first 12 bytes announce, of those promptlab reads, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:2] == b"BM" and head[6:10] == b"\x00" * 4:  # "BM", the file size, then 4 reserved zero bytes
        return "BMP"
    return next((name for signature, name in SIGNATURES.items() if head.startswith(signature)), None)


def _open_and_load(source: str | Path | io.BytesIO, name: str, state: dict) -> tuple[Image.Image, str]:
    with Image.open(source, formats=READ_FORMATS) as image:
        state["format"] = image.format
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
