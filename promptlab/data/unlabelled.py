"""Label-free data for NoLA: the unlabelled pool, its strong view, and class names without a dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

from promptlab.backbone import PreprocessConfig
from promptlab.data.images import list_images
from promptlab.data.sampling import Sample
from promptlab.data.sources import DatasetError, SplitSamples, check_class_names
from promptlab.data.transforms import _INTERPOLATION

log = logging.getLogger(__name__)


def strong_transform(cfg: PreprocessConfig) -> T.Compose:
    """NoLA's (LaFTer's) strong view, as the reference: crop 0.2-1, flip, colour jitter (p=0.8), perspective
    (distortion 0.2, p=0.5), a second colour jitter and a Gaussian blur, both always on.
    """
    interpolation = _INTERPOLATION[cfg.interpolation]
    return T.Compose(
        [
            T.RandomResizedCrop(cfg.size, scale=(0.2, 1.0), interpolation=interpolation),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomPerspective(distortion_scale=0.2, p=0.5, interpolation=interpolation),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
            RandomBlur(cfg.size),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )


class RandomBlur:
    """PIL's Gaussian blur with a radius drawn from U(0.1, 2) pixels of a 224-pixel view (the reference's
    SimCLR blur), scaled to the view's size so that small toy images are blurred alike.
    """

    def __init__(self, size: int, low: float = 0.1, high: float = 2.0) -> None:
        self.low, self.high = low * size / 224, high * size / 224

    def __call__(self, image: Image.Image) -> Image.Image:
        """One strong view of an image."""
        radius = float(torch.empty(()).uniform_(self.low, self.high))  # torch's RNG: seeded per worker
        return image.filter(ImageFilter.GaussianBlur(radius=radius))


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
    dataset's training split with its labels dropped (the NoLA protocol).
    """
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
