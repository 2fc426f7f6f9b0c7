"""A corpus of bad image files the tests generate: every format Pillow writes, stored
under image extensions; truncated at several offsets; bit-flipped headers; huge declared sizes;
animations whose later frames are broken. Deterministic for a seed."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image

# Formats Pillow writes (format name -> extension of the file); the first six are those promptlab reads.
WRITTEN_FORMATS = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "BMP": ".bmp",
    "GIF": ".gif",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "DDS": ".dds",
    "EPS": ".eps",
    "ICO": ".ico",
    "IM": ".im",
    "JPEG2000": ".jp2",
    "MSP": ".msp",
    "PCX": ".pcx",
    "PPM": ".ppm",
    "SGI": ".sgi",
    "SPIDER": ".spi",
    "TGA": ".tga",
    "XBM": ".xbm",
    "PDF": ".pdf",
    "QOI": ".qoi",
}
TIFF_COMPRESSIONS = ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg")
TRUNCATE_AT = (0.02, 0.1, 0.3, 0.6, 0.9, 0.99)


def encode(image: Image.Image, image_format: str, **options) -> bytes | None:
    """The image in ``image_format``, or None where this Pillow cannot write it."""
    if image_format in ("MSP", "XBM"):
        image = image.convert("1")
    elif image_format in ("SPIDER",):
        image = image.convert("F")
    elif image_format in ("IM", "PCX", "TGA", "SGI", "PPM", "QOI", "DDS") and image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=image_format, **options)
    except (OSError, KeyError, ValueError):
        return None
    return buffer.getvalue()


def picture(size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
    image.paste((rng.randint(0, 255), 20, 200), (5, 5, 30, 25))
    return image


def png_declaring(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR (with a correct CRC) declares ``width`` x ``height``."""
    raw = b"".join(b"\x00" + b"\x00\x00\x00" * 1 for _ in range(1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(picture((8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = data.index(b"\x2c")  # image descriptor: left, top, width, height
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(picture((8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(picture((16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animation(image_format: str) -> bytes | None:
    frames = [picture(seed=i) for i in range(4)]
    return encode(frames[0], image_format, save_all=True, append_images=frames[1:], duration=50, loop=0)


def corpus(seed: int = 0) -> dict[str, bytes]:
    """File name -> bytes. Names say what each file is; every one may be accepted or refused, never
    crash or hang an entry point."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    originals: dict[str, bytes] = {}
    for image_format, extension in WRITTEN_FORMATS.items():
        data = encode(picture(), image_format)
        if data is not None:
            originals[f"{image_format.lower()}{extension}"] = data
            # Another format's bytes under an image extension promptlab reads.
            files[f"{image_format.lower()}-as.png"] = data
    for compression in TIFF_COMPRESSIONS:
        data = encode(picture(), "TIFF", compression=compression)
        if data is not None:
            originals[f"tiff-{compression}.tif"] = data
    for image_format in ("GIF", "WEBP", "PNG", "TIFF"):
        data = animation(image_format)
        if data is not None:
            originals[f"animated-{image_format.lower()}{WRITTEN_FORMATS[image_format]}"] = data
            # Later frames broken: the last quarter of the bytes overwritten with noise.
            broken = bytearray(data)
            for i in range(len(broken) * 3 // 4, len(broken)):
                broken[i] = rng.randrange(256)
            files[f"animated-{image_format.lower()}-broken-frames{WRITTEN_FORMATS[image_format]}"] = bytes(broken)
    files |= originals
    for name, data in originals.items():
        stem, _, extension = name.rpartition(".")
        for fraction in TRUNCATE_AT:
            files[f"{stem}-cut{int(fraction * 100)}.{extension}"] = data[: max(1, int(len(data) * fraction))]
        for flip in range(3):
            flipped = bytearray(data)
            for _ in range(3):
                at = rng.randrange(min(64, len(flipped)))
                flipped[at] ^= 1 << rng.randrange(8)
            files[f"{stem}-flip{flip}.{extension}"] = bytes(flipped)
    for width, height in ((100_000, 100_000), (9000, 9000), (65535, 1), (1, 65535)):
        files[f"huge-{width}x{height}.png"] = png_declaring(width, height)
        files[f"huge-{width}x{height}.bmp"] = bmp_declaring(width, height)
        if max(width, height) <= 65535:
            files[f"huge-{width}x{height}.gif"] = gif_declaring(width, height)
            files[f"huge-{width}x{height}.jpg"] = jpeg_declaring(width, height)
    files["empty.jpg"] = b""
    files["text.png"] = b"not an image at all\n"
    return files
