"""Label-free data for NoLA: the unlabelled pool, its strong view, and class names without a dataset."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torchvision.transforms as T

from promptlab.backbone import PreprocessConfig
from promptlab.data.images import list_images
from promptlab.data.sampling import Sample
from promptlab.data.sources import DatasetError, SplitSamples, check_class_names
from promptlab.data.transforms import _INTERPOLATION

log = logging.getLogger(__name__)


def strong_transform(cfg: PreprocessConfig) -> T.Compose:
    """NoLA's (LaFTer's) strong view: crop 0.2-1, flip, colour jitter, perspective, blur."""
    return T.Compose([
        T.RandomResizedCrop(cfg.size, scale=(0.2, 1.0), interpolation=_INTERPOLATION[cfg.interpolation]),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomPerspective(p=0.3),
        T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.5),
        T.ToTensor(),
        T.Normalize(cfg.mean, cfg.std),
    ])


class BothViews:
    """Two transforms of one image, read once: e.g. CLIP's view and the DINO labeller's view."""

    def __init__(self, first: Callable, second: Callable) -> None:
        self.first, self.second = first, second

    def __call__(self, image) -> tuple:
        return self.first(image), self.second(image)


def names_only_splits(class_names_file: str, unlabelled: str | None) -> SplitSamples:
    """Class names from a file (one per line) and no labelled images at all."""
    if not unlabelled:
        raise DatasetError("class_names_file needs --data.unlabelled, the folder of unlabelled images.")
    path = Path(class_names_file)
    if not path.is_file():
        raise DatasetError(f"Class names file {str(path)!r} does not exist; write one class name per line.")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    check_class_names(names, f"Class names file {str(path)!r}")
    if len(names) < 2:
        raise DatasetError(f"Class names file {str(path)!r} names {len(names)} class(es); a classifier needs 2.")
    return SplitSamples(Path(unlabelled), names, [], [], [])


def unlabelled_pool(unlabelled: str | None, splits: SplitSamples) -> tuple[Path, list[Sample]]:
    """(image root, samples with label -1): every image under ``unlabelled`` (recursively), or the
    dataset's training split with its labels dropped (the NoLA protocol)."""
    if unlabelled:
        root = Path(unlabelled)
        if not root.is_dir():
            raise DatasetError(f"Unlabelled image folder {str(root)!r} does not exist; check --data.unlabelled.")
        samples = [Sample(str(p.relative_to(root)), -1, "") for p in list_images(root, recursive=True)]
    else:
        root, samples = splits.image_root, [Sample(s.path, -1, "") for s in splits.train]
    if not samples:
        raise DatasetError(f"No unlabelled images in {str(root)!r}; add images or point --data.unlabelled elsewhere.")
    log.info("Unlabelled pool: %d images in %s.", len(samples), root)
    return root, samples
