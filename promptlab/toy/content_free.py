"""Pictures without content: blank, single colours, noise and gradients.

A classifier should answer "none of these" for them; :mod:`benchmarks.open_set` and the tests measure
how many each method's default threshold rejects.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

KINDS = ("blank", "colour", "noise", "gradient")


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear gradient between two random colours in a random direction: (size, size, 3) uint8."""
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.cos(angle) * x + np.sin(angle) * y
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # (size, size) in [0, 1]
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return (start + t[..., None] * (end - start)).round().astype(np.uint8)


def content_free_images(per_kind: int = 10, size: int = 64, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """``per_kind`` pictures of each kind in :data:`KINDS`, as (kind, RGB image).

    Blank pictures are white, black and greys; colours are uniform random RGB; noise is uniform or
    Gaussian per pixel (half each, in colour or grey); gradients are linear between two random colours.
    """
    rng = np.random.default_rng(seed)
    images: list[tuple[str, Image.Image]] = []
    for i in range(per_kind):
        grey = round(255 * i / max(per_kind - 1, 1))
        images.append(("blank", Image.new("RGB", (size, size), (grey, grey, grey))))
    for _ in range(per_kind):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        images.append(("colour", Image.new("RGB", (size, size), colour)))
    for i in range(per_kind):
        channels = 3 if i % 4 < 2 else 1
        if i % 2 == 0:
            pixels = rng.integers(0, 256, (size, size, channels))
        else:
            pixels = np.clip(rng.normal(128, 50, (size, size, channels)), 0, 255)
        images.append(("noise", Image.fromarray(np.repeat(pixels, 3 // channels, axis=2).astype(np.uint8))))
    for _ in range(per_kind):
        images.append(("gradient", Image.fromarray(_gradient(rng, size))))
    return images
