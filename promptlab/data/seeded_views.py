"""Augmented views drawn the same way wherever an image is encoded (this process, a DataLoader worker,
a Ray actor): view ``v`` of an image uses the seed ``seed + v``, where ``seed`` comes from the image's
content, so the feature cache holds the same views however it was built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image


def seeded_views(image: Image.Image, transform: Callable, views: int, seed: int) -> torch.Tensor:
    """(views, 3, H, W): view v drawn with seed ``seed + v``, the global RNG left as it was."""
    with torch.random.fork_rng(devices=[]):  # leave the training RNG alone
        stack = []
        for view in range(views):
            torch.manual_seed(seed + view)
            stack.append(transform(image))
    return torch.stack(stack)


def view_seed(digest: str) -> int:
    """The seed of an image's first view, from the SHA-256 of its content."""
    return int(digest[:15], 16)
