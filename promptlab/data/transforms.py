"""Image transforms of the CoOp reference, sized and normalised from the backbone's own config."""

from __future__ import annotations

from torchvision import transforms as T

from promptlab.backbone import PreprocessConfig

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def train_transform(cfg: PreprocessConfig, crop_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """RandomResizedCrop + horizontal flip + normalise (Dassl's train transform, crop scale 0.08-1)."""
    return T.Compose(
        [
            T.RandomResizedCrop(cfg.size, scale=crop_scale, interpolation=_INTERPOLATION[cfg.interpolation]),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )


def test_transform(cfg: PreprocessConfig) -> T.Compose:
    """Resize the shorter side + center crop + normalise (CLIP's own preprocessing)."""
    return T.Compose(
        [
            T.Resize(cfg.size, interpolation=_INTERPOLATION[cfg.interpolation]),
            T.CenterCrop(cfg.size),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )
