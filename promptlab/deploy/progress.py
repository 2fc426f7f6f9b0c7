"""A progress bar on stderr that also works in the ONNX-only install, which has no tqdm."""

from __future__ import annotations

import sys
import time
from typing import Any


class _Lines:
    """Without tqdm: a line every few seconds ("classify: 1200/5000 images")."""

    def __init__(self, total: int, desc: str, enabled: bool, every_s: float = 5.0) -> None:
        self.total, self.desc, self.enabled, self.every_s = total, desc, enabled, every_s
        self.done, self._last = 0, time.monotonic()

    def update(self, count: int) -> None:
        self.done += count
        if self.enabled and (time.monotonic() - self._last >= self.every_s or self.done == self.total):
            print(f"{self.desc}: {self.done}/{self.total} images", file=sys.stderr, flush=True)
            self._last = time.monotonic()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A context manager with ``update(count)``: tqdm's bar where tqdm is installed, else plain lines."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:  # the ONNX-only install
        return _Lines(total, desc, enabled)
    return tqdm(total=total, unit="img", desc=desc, disable=not enabled, file=sys.stderr)
