"""Images named by URI (``s3://bucket/a.jpg``, ``https://host/a.png``, ``file:///data/a.jpg``), read
with fsspec, the filesystem layer pandas, Ray Data and huggingface_hub share; each scheme needs
fsspec's package for it (s3fs, gcsfs, aiohttp for HTTP), named in one sentence when missing.
"""

from __future__ import annotations

import re

from promptlab.errors import UserError

# A scheme of two or more letters, so a Windows drive ("C:\\...") is a path, not a URI.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
MAX_IMAGE_BYTES = 256 * 1024 * 1024  # an image file larger than this is refused unread


class UriReadError(UserError):
    """A URI that cannot be read (missing, unreachable, no filesystem for its scheme, too large)."""


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` strings (two letters or more before the colon)."""
    return bool(_URI.match(text))


def read_uri(uri: str) -> bytes:
    """The bytes behind ``uri``.

    Raises:
        UriReadError: fsspec or its package for the scheme is missing, the object is missing or
            unreachable, or it is larger than :data:`MAX_IMAGE_BYTES`; one sentence naming the URI.
    """
    try:
        import fsspec
    except ImportError as error:
        raise UriReadError(f"Reading {uri!r} needs fsspec: install it with pip install fsspec.") from error
    try:
        with fsspec.open(uri, "rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    except ImportError as error:  # fsspec's message names the package its scheme needs
        message = str(error).rstrip(".")
        raise UriReadError(f"Cannot read {uri!r}: {message[:1].lower()}{message[1:]}.") from error
    except FileNotFoundError as error:  # fsspec's HTTP filesystem also says so for a refused connection
        raise UriReadError(f"Image {uri!r} not found or unreachable; check the URI.") from error
    except Exception as error:  # the filesystem's own errors (network, permissions, unknown scheme)
        detail = f"{type(error).__name__}: {str(error).rstrip('.')}" if str(error) else type(error).__name__
        raise UriReadError(f"Cannot read {uri!r} ({detail}); check the URI and your access to it.") from error
    if len(data) > MAX_IMAGE_BYTES:
        raise UriReadError(f"Image {uri!r} is larger than {MAX_IMAGE_BYTES // 2**20} MiB; downscale it first.")
    return data
