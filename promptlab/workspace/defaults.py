"""What the app trains by default, chosen by how many training images each class has.

With very few images a learned prompt overfits and ends below zero-shot CLIP; with more, a shared
context and then one context per class pay off. The thresholds and epochs come from
``benchmarks/app_presets.md`` (toy projects, three seeds, 9 held-out images per class), and every
run still compares itself with zero-shot on validation images (the run's own fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DefaultRun:
    """The app's default for a project.

    Attributes:
        method: registered method key.
        epochs: the preset's epochs.
        extra: model init args on top of the method's defaults.
        benchmark_config: the matching row name of ``benchmarks/app_presets.py`` (None: zero-shot).
        why: one sentence for the Train page.
    """

    method: str
    epochs: int
    extra: dict = field(default_factory=dict)
    benchmark_config: str | None = None
    why: str = ""


ZERO_SHOT_BELOW = 4  # training images per class under which nothing learned beat zero-shot reliably
CLASS_CONTEXTS_FROM = 10  # from here one context per class beats a shared one


def default_run(train_per_class: int) -> DefaultRun:
    """The default method, epochs and context for the smallest class's training-image count."""
    if train_per_class < ZERO_SHOT_BELOW:
        return DefaultRun(
            "zeroshot",
            1,
            why=f"With fewer than {ZERO_SHOT_BELOW} training images per class, learned prompts measured below "
            "zero-shot CLIP, so zero-shot is preselected; add images to learn.",
        )
    if train_per_class < CLASS_CONTEXTS_FROM:
        return DefaultRun(
            "coop",
            50,
            {"class_specific": False},
            "coop, shared context, 50 epochs",
            why=f"With {ZERO_SHOT_BELOW}-{CLASS_CONTEXTS_FROM - 1} training images per class, one context shared "
            "by every class for 50 epochs measured best.",
        )
    return DefaultRun(
        "coop",
        200,
        {"class_specific": True},
        "coop, one context per class, 200 epochs",
        why=f"With {CLASS_CONTEXTS_FROM} or more training images per class, one context per class for 200 epochs "
        "measured best.",
    )
