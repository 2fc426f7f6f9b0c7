"""Atomic file writes: a crash or a concurrent reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object], mode: int = 0o644) -> Path:
    """Calls ``write(temporary)`` for a temporary file beside ``path``, then renames it to ``path``.

    Args:
        path: the file to write.
        write: writes the content to the path it is given (e.g. ``safetensors.torch.save_file``).
        mode: permissions of the result (mkstemp's own are 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def human_size(size: int) -> str:
    """A file size as people read it: 512 B, 3.8 KB, 12.4 MB, 1.2 GB (powers of 1024)."""
    value, unit = float(size), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
