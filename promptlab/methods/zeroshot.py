"""Zero-shot CLIP: class features from hand-written templates, nothing trained."""

from __future__ import annotations

from typing import Literal

import torch
from typing_extensions import override

from promptlab.methods._base import CLIPClassifier
from promptlab.methods._contract import ToyDefaults
from promptlab.methods._templates import ensemble_features, resolve_templates


class ZeroShotCLIP(CLIPClassifier):
    """Zero-shot CLIP.

    Args:
        templates: ``dataset`` (the dataset's own template, CoOp's zero-shot baseline), ``ensemble``
            (CoOp's 7 selected ImageNet templates), ``openai`` (CLIP's 80 ImageNet templates), or
            a list of templates with ``{}`` for the class name.
        **kwargs: see :class:`CLIPClassifier`.
    """

    key = "zeroshot"
    label = "Zero-shot CLIP"
    about = "No training: CLIP compares each image with 'a photo of a <class>'. A baseline."
    learns_from = "names"
    toy = ToyDefaults("zeroshot.yaml")
    app_init_args = {"templates": "ensemble"}  # on a real CLIP, CoOp's ensemble beats a single template
    min_images_per_class = 1

    # buffers registered in __init__
    text_features: torch.Tensor

    def __init__(self, templates: Literal["dataset", "ensemble", "openai"] | list[str] = "dataset", **kwargs) -> None:
        super().__init__(**kwargs)
        self.templates = resolve_templates(templates, self.hparams.dataset_template)
        features = ensemble_features(self.backbone, self.prompt_class_names, self.templates)
        self.register_buffer("text_features", features, persistent=False)  # (C, D)

    @override
    def class_features(self) -> torch.Tensor:
        return self.text_features
