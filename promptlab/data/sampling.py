"""Few-shot draws and base/new class splits, following Dassl/CoOp exactly."""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from typing import Literal, NamedTuple

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    """One labelled image; ``path`` is relative to the dataset's image folder."""

    path: str
    label: int
    class_name: str


def group_by_label(samples: list[Sample]) -> dict[int, list[Sample]]:
    """Samples per label, labels in first-seen order (Dassl's ``split_dataset_by_label``)."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.label].append(sample)
    return groups


def draw_few_shot(samples: list[Sample], shots: int, rng: random.Random) -> list[Sample]:
    """Draws ``shots`` samples per label with ``rng.sample`` (Dassl's ``generate_fewshot_dataset``).

    Labels with fewer samples keep all of them, with a warning, as the reference does.
    ``shots < 1`` keeps everything.
    """
    if shots < 1:
        return list(samples)
    drawn: list[Sample] = []
    short: list[tuple[str, int]] = []  # (class, images) of the classes with fewer than ``shots``
    groups = group_by_label(samples)
    for items in groups.values():
        if len(items) >= shots:
            drawn.extend(rng.sample(items, shots))
        else:
            short.append((items[0].class_name, len(items)))
            drawn.extend(items)
    if short:  # one line for all of them, however many classes
        listed = ", ".join(f"{name!r} ({count})" for name, count in sorted(short, key=lambda s: s[1])[:3])
        more = f" and {len(short) - 3} more" if len(short) > 3 else ""
        log.warning(
            "%d of %d classes have fewer images than shots=%d, so all of theirs are used: %s%s.",
            len(short),
            len(groups),
            shots,
            listed,
            more,
        )
    return drawn


def draw_train_val(
    train: list[Sample], val: list[Sample], shots: int, seed: int, val_fraction: float = 0.2
) -> tuple[list[Sample], list[Sample]]:
    """The CoOp draw: train with ``shots`` per class, then val with min(shots, 4), one seeded stream.

    A dataset without validation images gets them from its training images, never from its test
    images: after the few-shot draw, min(shots, 4) per class from the images not drawn; without a
    few-shot draw (``shots < 1``), ``val_fraction`` of each class, keeping at least one to train on.
    The training draw is the reference's either way.
    """
    rng = random.Random(seed)  # same stream as the reference's random.seed(seed)
    drawn = draw_few_shot(train, shots, rng)
    if val:
        return drawn, draw_few_shot(val, min(shots, 4), rng) if shots >= 1 else list(val)
    if shots >= 1:
        taken = set(drawn)
        rest = group_by_label([s for s in train if s not in taken])
        return drawn, [s for items in rest.values() for s in rng.sample(items, min(shots, 4, len(items)))]
    kept, held = [], []
    for items in group_by_label(train).values():
        items = list(items)
        rng.shuffle(items)
        n_val = min(round(len(items) * val_fraction), len(items) - 1)
        held += items[:n_val]
        kept += items[n_val:]
    return kept, held


def subsample_classes(splits: list[list[Sample]], subsample: Literal["all", "base", "new"]) -> list[list[Sample]]:
    """Keeps the first half of the sorted labels (base) or the rest (new), relabelled from 0.

    The labels are taken from the first split, as in CoOp's ``subsample_classes``.
    """
    if subsample == "all":
        return splits
    labels = sorted({sample.label for sample in splits[0]})
    half = math.ceil(len(labels) / 2)
    selected = labels[:half] if subsample == "base" else labels[half:]
    relabel = {old: new for new, old in enumerate(selected)}
    return [[Sample(s.path, relabel[s.label], s.class_name) for s in split if s.label in relabel] for split in splits]


def split_folder_samples(
    samples: list[Sample], train_fraction: float, val_fraction: float, seed: int = 1
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Splits each class into train/val/test like the reference's ``read_and_split_data``.

    Each class keeps at least one training image; the split is seeded and stable.
    """
    rng = random.Random(seed)
    train, val, test = [], [], []
    for items in group_by_label(samples).values():
        items = list(items)
        rng.shuffle(items)
        n_train = max(1, round(len(items) * train_fraction))
        n_val = round(len(items) * val_fraction) if len(items) > n_train else 0
        n_val = min(n_val, len(items) - n_train)
        train += items[:n_train]
        val += items[n_train : n_train + n_val]
        test += items[n_train + n_val :]
    return train, val, test
