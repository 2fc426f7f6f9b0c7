"""Torch datasets over sample lists, with unreadable images either named in an error or skipped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.data import Dataset, default_collate

from promptlab.data.images import ImageLoadError, load_image
from promptlab.data.sampling import Sample

log = logging.getLogger(__name__)

SKIP_HINT = "Or pass --data.skip_bad_images true to skip unreadable images."
T = TypeVar("T")


_warned: set[str] = set()  # messages of images already skipped in this process: warned once, not each epoch


def read_or_skip(read: Callable[[], T], skip: bool) -> T | None:
    """``read()`` (loading or hashing one image file); an :class:`ImageLoadError` gives None with a
    warning (once per file) when ``skip``, else is raised again with the hint that skipping is possible.
    """
    try:
        return read()
    except ImageLoadError as error:
        if skip:
            if str(error) not in _warned:
                _warned.add(str(error))
                log.warning("Skipping unreadable image: %s", error)
            return None
        raise ImageLoadError(f"{error} {SKIP_HINT}") from None


class ImageSamples(Dataset):
    """(image tensor, label) pairs read from ``image_root / sample.path``.

    Args:
        image_root: folder the sample paths are relative to.
        samples: labelled samples (label -1 for unlabelled prediction inputs).
        transform: PIL image -> tensor.
        skip_bad_images: return None for unreadable files (dropped by :func:`collate_skipping_none`)
            instead of raising.
    """

    def __init__(
        self, image_root: Path, samples: list[Sample], transform: Callable, skip_bad_images: bool = False
    ) -> None:
        self.image_root = Path(image_root)
        self.samples = samples
        self.transform = transform
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        sample = self.samples[index]
        image = read_or_skip(lambda: load_image(self.image_root / sample.path), self.skip_bad_images)
        return None if image is None else (self.transform(image), sample.label, index)


def collate_skipping_none(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Default collate without the skipped (None) items; None when the whole batch was unreadable."""
    batch = [item for item in batch if item is not None]
    return default_collate(batch) if batch else None
