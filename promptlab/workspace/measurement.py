"""How much an accuracy measured on a few held-out images can be trusted: its interval, and whether a
difference to zero-shot CLIP is more than noise (the app shows both next to every accuracy).
"""

from __future__ import annotations

import math

Z_95 = 1.959964  # two-sided 95%


def wilson_interval(accuracy: float, images: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval of an accuracy measured on ``images`` images (0-1; (0, 1) for none).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0% or 100%: 6 of 6 right
    gives 61% to 100%.
    """
    if images <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * images)) / (1 + z * z / images)
    half = z / (1 + z * z / images) * math.sqrt(accuracy * (1 - accuracy) / images + z * z / (4 * images * images))
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(first: float, second: float, images: int, z: float = Z_95) -> tuple[float, float]:
    """Agresti and Caffo's interval of ``first - second``, two accuracies on ``images`` images each (one
    success and one failure added to each, which keeps it honest at 0% and 100%). It treats the two as
    independent, which is conservative for two classifiers measured on the same images.
    """
    if images <= 0:
        return -1.0, 1.0
    a, b = (first * images + 1) / (images + 2), (second * images + 1) / (images + 2)
    half = z * math.sqrt(a * (1 - a) / (images + 2) + b * (1 - b) / (images + 2))
    return a - b - half, a - b + half


def within_noise(first: float, second: float, images: int) -> bool:
    """True when the 95% interval of the difference includes 0: the data cannot tell the two apart."""
    low, high = difference_interval(first, second, images)
    return low <= 0.0 <= high


def accuracy_note(accuracy: float, images: int) -> str:
    """The caption of an accuracy, e.g. "on 6 held-out images, 95% interval 61%-100% (Wilson)"."""
    low, high = wilson_interval(accuracy, images)
    return f"on {images} held-out image{'s' * (images != 1)}, 95% interval {low:.0%}-{high:.0%} (Wilson)"
