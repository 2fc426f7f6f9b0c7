"""CLAP (Silva-Rodríguez et al., CVPR 2024): a linear probe that starts at zero-shot CLIP's class
prototypes and is pulled back to them, class by class, as jusiro/CLAP computes it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.deploy.heads import Head, LinearHead
from promptlab.methods._contract import Bars, Panel, Setting, ToyDefaults
from promptlab.methods._feature_fitted import FeatureFitted
from promptlab.methods._schedule import warmup_cosine_factor
from promptlab.methods._templates import TemplateChoice, resolve_templates

log = logging.getLogger(__name__)


class CLAP(FeatureFitted):
    """CLass-Adaptive linear Probe: ``logits = scale * norm(f) norm(W)^T`` with W (C, D) initialised to
    the zero-shot prototypes T (ZS-LP), trained with ``CE + mean_c lambda_c ||w_c - t_c||^2``.

    As the reference (``trainers/adapters.py``): T is the mean of the *unnormalised* text features of
    the templates, W stays unnormalised (the penalty's scale is CLIP's raw text norm), and lambda_c is
    the mean zero-shot probability of class c's own training views. The released code and every
    released run keep lambda fixed: its augmented-Lagrangian update (``outer_step``) runs only for
    constraint names containing "adaptative", and it starts with a penalty of 0 that it divides by, so
    it is not exercised here either. Training runs on the feature cache's augmented views (the
    reference: 20 views, crops 0.08-1): SGD (lr 0.1, momentum 0.9, no weight decay), one warm-up
    epoch at a constant 1e-5, then cosine; each "epoch" is ``max(1, N // feature_batch_size)`` mini-batches of
    the shuffled view bank (N training images), the reference's ``len(train_loader)``. The last epoch is
    kept (nothing is chosen on validation or test images). With no weight moved the classifier is
    zero-shot CLIP exactly.

    Args:
        templates: the zero-shot prototypes' templates (``dataset``, ``ensemble``, ``openai`` or a list;
            the reference: the dataset's, and 7 + 1 for ImageNet).
        constraint: ``l2`` (lambda_c per class, the reference's default), ``balanced`` (all 1),
            ``corrected`` (lambda_c rescaled to mean 1), ``constant`` (their mean for every class) or
            ``none`` (ZS-LP: no penalty).
        epochs: passes of the schedule (reference: 300).
        feature_batch_size: feature rows per step (reference: 256).
        lr: SGD learning rate (reference: 0.1).
        momentum: SGD momentum (reference: 0.9).
        weight_decay: SGD weight decay (reference: 0).
        warmup_lr: the warm-up epoch's constant learning rate (reference: 1e-5).
        **kwargs: see :class:`~promptlab.methods._base.CLIPClassifier`.
    """

    key = "clap"
    label = "CLAP"
    about = (
        "A linear probe that starts at zero-shot CLIP and is pulled back to it, class by class: strong with one "
        "to four images per class, needs no validation images, seconds on cached features."
    )
    settings = (Setting("lr", "Learning rate", 0.1, 1e-4, 1.0),)
    toy = ToyDefaults("clap.yaml")
    CONSTRAINTS = ("l2", "balanced", "corrected", "constant", "none")

    # buffers registered in __init__
    prototypes: torch.Tensor
    multipliers: torch.Tensor

    def __init__(
        self,
        templates: TemplateChoice = "dataset",
        constraint: str = "l2",
        epochs: int = 300,
        feature_batch_size: int = 256,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_lr: float = 1e-5,
        **kwargs,
    ) -> None:
        super().__init__(lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_lr=warmup_lr, **kwargs)
        if constraint not in self.CONSTRAINTS:
            raise ValueError(f"constraint must be one of {', '.join(self.CONSTRAINTS)} (got {constraint!r}).")
        if epochs < 1 or feature_batch_size < 1:
            raise ValueError(f"epochs and feature_batch_size must be at least 1 (got {epochs}, {feature_batch_size}).")
        self.templates = resolve_templates(templates, self.hparams.dataset_template)
        prototypes = self.zero_shot_prototypes()
        self.register_buffer("prototypes", prototypes, persistent=False)  # (C, D) T, unnormalised
        self.weight = nn.Parameter(prototypes.clone())  # (C, D) W, unnormalised
        self.register_buffer("multipliers", torch.zeros(len(self.class_names)))  # (C,) lambda_c

    @torch.no_grad()
    def zero_shot_prototypes(self) -> torch.Tensor:
        """(C, D): per class, the mean of the unnormalised text features of its templates (the reference's)."""
        names = self.prompt_class_names
        texts = [template.replace("{}", name) for name in names for template in self.templates]
        features = self.backbone.encode_text(texts, normalize=False).float()  # (C * templates, D)
        return features.view(len(names), len(self.templates), -1).mean(dim=1)

    @override
    def class_features(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=-1)

    @override
    def export_head(self) -> Head:
        return LinearHead(self.class_features().detach().float(), float(self.logit_scale))

    def penalty(self) -> torch.Tensor:
        """``mean_c lambda_c ||w_c - t_c||^2``."""
        return (self.multipliers * (self.weight - self.prototypes).pow(2).sum(-1)).mean()

    @override
    def training_losses(self, image_features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.logits(F.normalize(image_features.float(), dim=-1), self.class_features())
        ce = F.cross_entropy(logits, targets)
        penalty = self.penalty()
        return {"loss": ce + penalty, "logits": logits, "ce": ce, "penalty": penalty}

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """How hard each class is held to its zero-shot prototype, and how far it moved."""
        pull = {name: round(float(m), 3) for name, m in zip(self.class_names, self.multipliers, strict=True)}
        moved = F.cosine_similarity(self.weight.detach(), self.prototypes, dim=-1)
        caption = "Cosine between each class's learned weights and its zero-shot prototype: " + ", ".join(
            f"{name} {float(c):.3f}" for name, c in zip(self.class_names, moved, strict=True)
        )
        return [Bars("What CLAP learned: the pull back to zero-shot, per class (lambda_c)", pull, "lambda_c", caption)]

    # -- fitting ------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_multipliers(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(C,) lambda_c from (M, D) training view features and (M,) labels: the mean zero-shot softmax
        probability of the true class (the reference's ``init_lagrangian_multipliers``), as ``constraint`` says.
        """
        constraint = self.hparams.constraint
        if constraint == "none":
            return torch.zeros(len(self.class_names))
        if constraint == "balanced":
            return torch.ones(len(self.class_names))
        zero_shot = F.normalize(self.prototypes, dim=-1)
        probabilities = (self.logit_scale * F.normalize(features.float(), dim=-1) @ zero_shot.T).softmax(-1)
        true_class = probabilities.gather(1, labels[:, None]).squeeze(1)  # (M,)
        sums = torch.zeros(len(self.class_names)).index_add_(0, labels.cpu(), true_class.cpu())
        multipliers = sums / torch.bincount(labels.cpu(), minlength=len(self.class_names)).clamp(min=1)
        if constraint == "corrected":
            return multipliers / multipliers.mean()
        if constraint == "constant":
            return torch.full_like(multipliers, float(multipliers.mean()))
        return multipliers

    @override
    def on_fit_start(self) -> None:
        views, labels = self.split_features("train", augmented=True)  # (N, V, D)
        self.fit_features(views, labels)

    def fit_features(self, views: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Trains W on (N, V, D) view features of N training images with (N,) labels (see the class docstring)."""
        n, v, d = views.shape
        device = self.weight.device
        bank = views.reshape(n * v, d).float().to(device)  # the reference's feature bank: every view of every image
        bank_labels = labels.repeat_interleave(v).to(device)
        self.multipliers = self.init_multipliers(bank, bank_labels).to(device)
        hp = self.hparams
        optimizer = torch.optim.SGD([self.weight], lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        steps = max(1, n // hp.feature_batch_size)  # len(train_loader) of N images, drop_last
        with torch.inference_mode(False), torch.enable_grad():
            for epoch in range(hp.epochs):
                for group in optimizer.param_groups:
                    group["lr"] = hp.lr * warmup_cosine_factor(epoch, hp.epochs, 1, hp.warmup_lr / hp.lr)
                order = torch.randperm(n * v, generator=generator).to(device)
                for step in range(steps):
                    rows = order[step * hp.feature_batch_size : (step + 1) * hp.feature_batch_size]
                    loss = self.training_losses(bank[rows], bank_labels[rows])["loss"]
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        with torch.no_grad():
            ce = float(F.cross_entropy(self.logits(F.normalize(bank, dim=-1), self.class_features()), bank_labels))
        log.info(
            "CLAP: %d epochs of %d step(s); training cross-entropy %.3f, penalty %.4f.",
            hp.epochs,
            steps,
            ce,
            float(self.penalty().detach()),
        )
        if not math.isfinite(ce):
            raise ValueError("CLAP diverged (non-finite loss); lower the learning rate.")
