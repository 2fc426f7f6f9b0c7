"""ProLIP (Fahes et al., 2025): only the image tower's last projection trains, held near its start, as
astra-vision/ProLIP computes it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.backbone import BackboneError
from promptlab.data.feature_cache import CachedFeatureKind
from promptlab.methods._contract import Bars, Panel, Setting, ToyDefaults
from promptlab.methods._feature_fitted import FeatureFitted
from promptlab.methods._templates import TemplateChoice, ensemble_features, resolve_templates

log = logging.getLogger(__name__)


class ProLIP(FeatureFitted):
    """Projection-only fine-tuning: ``logits = scale * norm(P x) T^T``, where x is the image tower's pooled
    feature before its last projection, P (width, D) that projection, trained, and T the fixed zero-shot
    text features; loss ``CE + lambda ||P - P_0||_F^2`` with lambda = 1 / shots (the validation-free
    setting, ``lambda_funct_1_N``).

    As the reference (``methods/ProLIP.py``): Adam (eps 1e-4) with a cosine over ``steps`` full-batch
    steps, step t on the t-th cached augmented view of every training image (cycling through the
    views; the reference: 300 views, crops 0.5-1); T is the normalised mean of the templates'
    normalised features. Differences: training runs in fp32 (the reference trains the fp16 weight, which
    its eps of 1e-4 is sized for), and the scale is the backbone's logit scale (100 for OpenAI CLIP, the
    reference's constant). The trained P is the image tower's own projection, so the exported classifier
    embeds the image tower with it and keeps the zero-shot head; P cannot fold into the head, since the
    normalisation comes after it. ViT backbones only: a ResNet's projection is its attention pool's
    ``c_proj``, which promptlab does not train. With P = P_0 the classifier is zero-shot CLIP exactly.

    Args:
        templates: the zero-shot head's templates (``dataset``, ``ensemble``, ``openai`` or a list).
        regularisation: lambda; None for 1 / shots (the reference's validation-free rule).
        steps: optimisation steps (reference: 300).
        lr: Adam's learning rate (reference's validation-free runs: 1e-5 to 1e-2; 1e-5 for base-to-new).
        epsilon: Adam's eps (reference: 1e-4).
        **kwargs: see :class:`~promptlab.methods._base.CLIPClassifier`.
    """

    key = "prolip"
    label = "ProLIP"
    about = (
        "Only the image encoder's last projection learns, held near where it started: strong with one to four "
        "images per class, needs no validation images, seconds on cached features."
    )
    settings = (Setting("lr", "Learning rate", 1e-4, 1e-7, 1e-1),)
    toy = ToyDefaults("prolip.yaml")
    transfers_to_new_classes = True  # P is shared by every class; a new class takes its zero-shot text feature
    cached_image_features: ClassVar[CachedFeatureKind] = "pre_projection"

    # buffers registered in __init__
    text_features: torch.Tensor
    initial_projection: torch.Tensor
    regularisation_weight: torch.Tensor

    def __init__(
        self,
        templates: TemplateChoice = "dataset",
        regularisation: float | None = None,
        steps: int = 300,
        lr: float = 1e-5,
        epsilon: float = 1e-4,
        **kwargs,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        if steps < 1 or (regularisation is not None and regularisation < 0):
            raise ValueError(f"steps must be at least 1 and regularisation 0 or more (got {steps}, {regularisation}).")
        try:
            projection = self.backbone.image_projection
        except BackboneError as error:
            raise ValueError(f"ProLIP trains a ViT's last image projection: {error}") from error
        self.templates = resolve_templates(templates, self.hparams.dataset_template)
        features = ensemble_features(self.backbone, self.prompt_class_names, self.templates)
        self.register_buffer("text_features", features.float(), persistent=False)  # (C, D) T
        self.register_buffer("initial_projection", projection.detach().float().clone(), persistent=False)  # P_0
        # The tower's own projection, trained: the exported image tower carries it.
        self.projection = nn.Parameter(projection.detach().float().clone())  # (width, D) P
        self.backbone.set_image_projection(self.projection)
        self.register_buffer("regularisation_weight", torch.tensor(0.0))  # lambda, set when fitted

    @property
    def caches_image_features(self) -> bool:
        """The features before the projection are fixed while P trains: they are cached."""
        return True

    @override
    def class_features(self) -> torch.Tensor:
        return self.text_features

    @override
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images, or (B, width) cached features before the projection -> (B, D) normalised."""
        if images.dim() == 2:
            return F.normalize(images.float() @ self.projection, dim=-1)
        return self.backbone.encode_image(images, normalize=True)

    def penalty(self) -> torch.Tensor:
        """``||P - P_0||_F^2`` (the reference's ``MSELoss(reduction='sum')``)."""
        return (self.projection - self.initial_projection).pow(2).sum()

    @override
    def training_losses(self, image_features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.logits(image_features, self.text_features)
        ce, penalty = F.cross_entropy(logits, targets), self.penalty()
        return {"loss": ce + self.regularisation_weight * penalty, "logits": logits, "ce": ce, "penalty": penalty}

    @override
    def on_fit_start(self) -> None:
        views, labels = self.split_features("train", augmented=True)  # (N, V, width)
        self.fit_features(views, labels)

    def fit_features(self, views: torch.Tensor, labels: torch.Tensor, regularisation: float | None = None) -> float:
        """Trains P on (N, V, width) cached views of N training images with (N,) labels; returns lambda."""
        hp, device = self.hparams, self.projection.device
        shots = max(1, round(len(labels) / max(len(labels.unique()), 1)))
        weight = regularisation if regularisation is not None else hp.regularisation
        weight = 1.0 / shots if weight is None else float(weight)
        self.regularisation_weight.fill_(weight)
        views, labels = views.float().to(device), labels.to(device)
        optimizer = torch.optim.Adam([self.projection], lr=hp.lr, eps=hp.epsilon)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, hp.steps)
        with torch.inference_mode(False), torch.enable_grad():
            for step in range(hp.steps):
                loss = self.training_losses(self.encode_images(views[:, step % views.shape[1]]), labels)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
        moved = float(self.penalty().detach())
        log.info("ProLIP: %d steps, lambda %.3g (1/%d shots); ||P - P_0||^2 = %.3g.", hp.steps, weight, shots, moved)
        if not math.isfinite(moved):
            raise ValueError("ProLIP diverged (non-finite projection); lower the learning rate.")
        return weight

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """How far each class's direction moved: the change of the projection seen from its text feature."""
        change = self.projection.detach() - self.initial_projection  # (width, D)
        shift = {
            name: round(float((change @ t).norm()), 4)
            for name, t in zip(self.class_names, self.text_features, strict=True)
        }
        relative = float(change.norm() / self.initial_projection.norm())
        caption = (
            f"The projection moved by {relative:.2%} of its norm (lambda = {float(self.regularisation_weight):.3g})."
        )
        return [Bars("What ProLIP learned: the projection's change along each class", shift, "change", caption)]
