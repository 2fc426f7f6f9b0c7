"""The learning-rate schedule of the reference code (Dassl): a constant warm-up, then a cosine."""

from __future__ import annotations

import math


def warmup_cosine_factor(epoch: int, max_epochs: int, warmup_epochs: int, warmup_factor: float) -> float:
    """Learning-rate multiplier of Dassl's ConstantWarmupScheduler around CosineAnnealingLR.

    Epochs before ``warmup_epochs`` run at ``warmup_factor``; epoch ``e`` after them at
    0.5 * (1 + cos(pi * (e - warmup_epochs) / max_epochs)), the successor stepping from 0. With
    ``warmup_epochs=0`` it is a plain cosine from 1 to 0.
    """
    if epoch < warmup_epochs:
        return warmup_factor
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs))
