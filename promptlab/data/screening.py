"""Screening a dataset's images once, before training, when unreadable ones may be skipped.

With ``skip_bad_images`` every image a run will read (the drawn training and validation images and
the test images) is decoded once up front: an unreadable one is warned about once, a drawn
training image that cannot be read is replaced by another image of its class (so no class is left
a shot short), and one summary line says how many were skipped. The run records them in
``data.json``. Without screening, a skipped image would be met (and warned about) in every epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from promptlab.data.images import ImageLoadError, load_image
from promptlab.data.sampling import Sample, group_by_label

log = logging.getLogger(__name__)

NAMED_IN_SUMMARY = 3


def unreadable_reason(path: Path) -> str | None:
    """None when ``path`` decodes, else the one-sentence reason."""
    try:
        load_image(path)
    except ImageLoadError as error:
        return str(error)
    return None


def find_unreadable(image_root: Path, samples: Iterable[Sample], progress: bool = True) -> dict[Sample, str]:
    """Decodes each sample once, with a progress bar; unreadable ones -> reason."""
    samples = list(dict.fromkeys(samples))
    checks = tqdm(samples, desc="Checking images", disable=not progress, leave=False)
    reasons = [unreadable_reason(image_root / sample.path) for sample in checks]
    bad = {sample: reason for sample, reason in zip(samples, reasons, strict=True) if reason is not None}
    for reason in bad.values():
        log.warning("Skipping unreadable image: %s", reason)
    return bad


def log_summary(bad: dict[Sample, str], tail: str = "") -> None:
    """One warning line for every skipped image together: the count and the first few names."""
    if not bad:
        return
    names = ", ".join(s.path for s in list(bad)[:NAMED_IN_SUMMARY]) + (", ..." if len(bad) > NAMED_IN_SUMMARY else "")
    log.warning("Skipped %d unreadable image(s) (%s)%s; data.json lists them.", len(bad), names, tail)


def screen_splits(
    image_root: Path,
    pool: list[Sample],
    train: list[Sample],
    val: list[Sample],
    test: list[Sample],
    shots: int,
    seed: int,
) -> tuple[list[Sample], list[Sample], list[Sample], dict[Sample, str]]:
    """Drops unreadable images from the splits; a drawn training image is replaced from its class.

    Args:
        image_root: folder the sample paths are relative to.
        pool: every training image of the dataset (what the few-shot draw drew from).
        train: the drawn training split.
        val: the validation split.
        test: the test split.
        shots: the few-shot draw's shots per class (< 1: no draw, nothing to replace).
        seed: seeds the choice of replacements.

    Returns:
        (train, val, test, unreadable samples -> reason).
    """
    bad = find_unreadable(image_root, [*train, *val, *test])
    if not bad:
        return train, val, test, bad
    kept = [s for s in train if s not in bad]
    if shots >= 1:
        rng = random.Random(seed)
        used = set(train) | set(val)
        spare = group_by_label([s for s in pool if s not in used])
        for label, missing in group_by_label([s for s in train if s in bad]).items():
            candidates = list(spare.get(label, []))
            rng.shuffle(candidates)
            need = len(missing)
            for candidate in candidates:
                if not need:
                    break
                reason = unreadable_reason(image_root / candidate.path)
                if reason is None:
                    kept.append(candidate)
                    need -= 1
                else:
                    log.warning("Skipping unreadable image: %s", reason)
                    bad[candidate] = reason
    log_summary(bad, "; drawn ones were replaced by other images of their class" if shots >= 1 else "")
    return kept, [s for s in val if s not in bad], [s for s in test if s not in bad], bad
