"""Zero-shot CLIP: class features from hand-written templates, nothing trained."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from promptlab.backbone import OPENAI_IMAGENET_TEMPLATES
from promptlab.data.catalog import ENSEMBLE_TEMPLATES
from promptlab.methods.base import CLIPClassifier


class ZeroShotCLIP(CLIPClassifier):
    """Zero-shot CLIP.

    Args:
        templates: ``dataset`` (the dataset's own template, CoOp's zero-shot baseline), ``ensemble``
            (CoOp's 7 selected ImageNet templates), ``openai`` (CLIP's 80 ImageNet templates), or
            a list of templates with ``{}`` for the class name.
        **kwargs: see :class:`CLIPClassifier`.
    """

    def __init__(self, templates: Literal["dataset", "ensemble", "openai"] | list[str] = "dataset", **kwargs) -> None:
        super().__init__(**kwargs)
        self.templates = resolve_templates(templates, self.hparams.dataset_template)
        self.register_buffer("text_features", self._encode_templates(), persistent=False)  # (C, D)

    @torch.no_grad()
    def _encode_templates(self) -> torch.Tensor:
        """Mean over templates of normalised features, renormalised (CLIP's prompt ensembling)."""
        texts = [t.replace("{}", name) for name in self.prompt_class_names for t in self.templates]
        features = self.backbone.encode_text(texts).view(len(self.class_names), len(self.templates), -1)
        return F.normalize(features.mean(dim=1), dim=-1)

    def class_features(self) -> torch.Tensor:
        return self.text_features


def resolve_templates(templates: str | list[str], dataset_template: str) -> list[str]:
    """Template names -> template strings, each checked to contain ``{}``."""
    named = {
        "dataset": [dataset_template],
        "ensemble": list(ENSEMBLE_TEMPLATES),
        "openai": [t("{}") for t in OPENAI_IMAGENET_TEMPLATES],
    }
    resolved = named[templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in resolved if "{}" not in t]
    if not resolved or bad:
        raise ValueError(f"Template {bad[0] if bad else ''!r} has no '{{}}' for the class name; add one.")
    return resolved
