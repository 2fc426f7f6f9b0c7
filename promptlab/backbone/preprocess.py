"""How images must be prepared for a backbone: size, normalisation and interpolation."""

from __future__ import annotations

from dataclasses import dataclass

from promptlab.backbone.source import BackboneError


@dataclass(frozen=True)
class PreprocessConfig:
    """How images must be prepared for a backbone (from open_clip's own preprocessing config)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @classmethod
    def from_open_clip(cls, cfg: dict) -> PreprocessConfig:
        """From open_clip's ``preprocess_cfg`` (a model's ``visual.preprocess_cfg``)."""
        size = cfg["size"]
        if isinstance(size, (tuple, list)):
            if size[0] != size[1]:
                raise BackboneError(f"Non-square input size {size} is not supported.")
            size = size[0]
        return cls(int(size), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))

    def to_dict(self) -> dict:
        """JSON-ready, as classifier files record it."""
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation}
