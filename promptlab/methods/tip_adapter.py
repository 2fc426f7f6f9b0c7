"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a cache model of the few-shot training
features added to zero-shot CLIP's logits; -F also fine-tunes the cache keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.data.dataset_error import DatasetError
from promptlab.deploy.heads import CacheHead, Head, cache_logits
from promptlab.methods._base import CLIPClassifier
from promptlab.methods._contract import Bars, Panel, Setting, ToyDefaults
from promptlab.methods._feature_fitted import FeatureFitted
from promptlab.methods._schedule import warmup_cosine_factor
from promptlab.methods._templates import ensemble_features, resolve_templates

log = logging.getLogger(__name__)


class TipAdapter(FeatureFitted):
    """Training-free Tip-Adapter: ``logits = scale * f W^T + alpha * exp(-beta (1 - f K^T)) V``.

    W are zero-shot CLIP's class features, K the cache keys (the training images' features, averaged
    over the data module's ``cache_views`` augmented views and renormalised), V their one-hot labels.
    ``alpha`` and ``beta`` are searched on the validation split over the reference's grid
    (``search_step`` values from 0.1 to ``search_scale``); without validation images the initial
    values stay. Differences from the reference code: the reference averages unnormalised view
    features before normalising, promptlab the normalised ones the feature cache stores; and the
    reference's -F keeps the epoch with the best *test* accuracy, promptlab the last epoch (the test
    set never chooses).

    Args:
        templates: zero-shot CLIP's templates (``dataset``, ``ensemble``, ``openai`` or a list).
        init_alpha: residual weight of the cache logits before the search (reference: 1.17, ImageNet 1).
        init_beta: sharpness of the affinities before the search (reference: 1).
        search_scale: largest (beta, alpha) of the search (reference: 7, 3).
        search_step: how many (beta, alpha) values the search tries (reference: 200, 20).
        fine_tune: fine-tune the cache keys (Tip-Adapter-F) with AdamW over the epochs.
        lr: AdamW learning rate of the keys (reference: 0.001), cosine to 0 per step.
        epsilon: AdamW's eps (reference: 1e-4).
        **kwargs: see :class:`CLIPClassifier`.
    """

    key = "tip_adapter"
    label = "Tip-Adapter"
    about = "A baseline: zero-shot CLIP plus a cache of your labelled images' features; nothing trained."
    toy = ToyDefaults("tip_adapter.yaml")

    # buffers registered in __init__
    text_features: torch.Tensor
    cache_values: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(
        self,
        templates: str | list[str] = "dataset",
        init_alpha: float = 1.17,
        init_beta: float = 1.0,
        search_scale: tuple[float, float] = (7.0, 3.0),
        search_step: tuple[int, int] = (200, 20),
        fine_tune: bool = False,
        lr: float = 0.001,
        epsilon: float = 1e-4,
        **kwargs,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        self.templates = resolve_templates(templates, self.hparams.dataset_template)
        features = ensemble_features(self.backbone, self.prompt_class_names, self.templates)
        self.register_buffer("text_features", features, persistent=False)  # (C, D)
        dim, n_classes = self.backbone.embed_dim, len(self.class_names)
        # Sized when fitted (N training images); the checkpoint's shapes are restored in load_state_dict.
        self.cache_keys = nn.Parameter(torch.empty(0, dim), requires_grad=fine_tune)  # (N, D)
        self.register_buffer("cache_values", torch.empty(0, n_classes))  # (N, C) one-hot
        self.register_buffer("alpha", torch.tensor(float(init_alpha)))
        self.register_buffer("beta", torch.tensor(float(init_beta)))

    @override
    def class_features(self) -> torch.Tensor:
        return self.text_features

    def tip_logits(self, image_features: torch.Tensor, alpha: float | torch.Tensor, beta: float | torch.Tensor):
        """(B, C) logits of (B, D) normalised features for given alpha and beta (differentiable in the keys)."""
        clip = self.backbone.logit_scale * image_features @ self.text_features.to(image_features.dtype).T
        return clip + alpha * cache_logits(image_features, self.cache_keys, self.cache_values, beta)

    @override
    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        return self.tip_logits(image_features, self.alpha, self.beta)

    @torch.no_grad()
    @override
    def export_head(self) -> Head:
        return CacheHead(
            self.text_features.float(),
            self.cache_keys.detach().float(),
            self.cache_values.float(),
            float(self.alpha),
            float(self.beta),
            float(self.backbone.logit_scale),
        )

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """The cache's size per class, and the alpha and beta it uses."""
        counts = {name: int(n) for name, n in zip(self.class_names, self.cache_values.sum(0).tolist(), strict=True)}
        caption = (
            f"alpha = {float(self.alpha):.3g} (weight of the cache against zero-shot CLIP), beta = "
            f"{float(self.beta):.3g} (how sharply it weighs the nearest cached images)."
        )
        return [Bars(f"What {self.label} learned from: cached training images per class", counts, "images", caption)]

    # -- fitting ------------------------------------------------------------------------------------

    @override
    def on_fit_start(self) -> None:
        if self.hparams.fine_tune and self._trainer is not None and self._trainer.world_size > 1:
            raise DatasetError("Tip-Adapter-F sizes its keys when fit starts and cannot train under DDP; use 1 device.")
        train, labels = self.split_features("train", augmented=True)  # (N, V, D)
        self.build_cache(train, labels)
        if not self.hparams.fine_tune:
            self.search_on_validation()

    @torch.no_grad()
    def build_cache(self, train_views: torch.Tensor, labels: torch.Tensor) -> None:
        """Keys: the renormalised mean of each training image's (V, D) view features; values: one-hot labels."""
        keys = F.normalize(train_views.float().mean(dim=1), dim=-1).to(self.text_features.device)
        self.cache_keys.data = keys  # the same Parameter object: the optimiser keeps its reference
        self.cache_values = F.one_hot(labels, len(self.class_names)).float().to(keys.device)

    @override
    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # After the last epoch of -F; before the checkpoint callback, so the checkpoint holds the result.
        if self.hparams.fine_tune and self.current_epoch == (self.trainer.max_epochs or 1) - 1:
            self.search_on_validation()

    @torch.no_grad()
    def search_on_validation(self) -> None:
        """Sets alpha and beta to the best validation accuracy of the reference's grid (first best wins)."""
        val, labels = self.split_features("val", augmented=False)
        if not len(val):
            log.info("Tip-Adapter: no validation images; alpha %.3g, beta %.3g as given.", self.alpha, self.beta)
            return
        features, labels = val[:, 0].to(self.text_features.device), labels.to(self.text_features.device)
        (beta_max, alpha_max), (beta_steps, alpha_steps) = self.hparams.search_scale, self.hparams.search_step
        betas = [i * (beta_max - 0.1) / beta_steps + 0.1 for i in range(beta_steps)]
        alphas = [i * (alpha_max - 0.1) / alpha_steps + 0.1 for i in range(alpha_steps)]
        best = (-1.0, float(self.beta), float(self.alpha))
        for beta in betas:
            for alpha in alphas:
                accuracy = float((self.tip_logits(features, alpha, beta).argmax(-1) == labels).float().mean())
                if accuracy > best[0]:
                    best = (accuracy, beta, alpha)
        self.beta.fill_(best[1])
        self.alpha.fill_(best[2])
        log.info("Tip-Adapter: beta %.3g, alpha %.3g (validation accuracy %.1f%%).", best[1], best[2], 100 * best[0])

    # -- Tip-Adapter-F: the keys learn, with the initial alpha and beta ---------------------------

    @override
    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if not self.hparams.fine_tune:
            return None
        return CLIPClassifier.training_step(self, batch, batch_idx)  # the shared loop, over training_losses

    @override
    def training_losses(self, image_features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.tip_logits(image_features, self.hparams.init_alpha, self.hparams.init_beta)
        return {"loss": F.cross_entropy(logits, targets), "logits": logits}

    @override
    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.hparams.lr, eps=self.hparams.epsilon)

    @override
    def configure_optimizers(self):
        if not self.hparams.fine_tune:
            return None
        optimizer = self.build_optimizer([self.cache_keys])
        steps = max(int(self.trainer.estimated_stepping_batches), 1) if self.trainer is not None else 1
        # The reference's CosineAnnealingLR over every step of every epoch.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, steps, 0, 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @override
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The cache's size is the number of training images: take it from the checkpoint.
        for name in ("cache_keys", "cache_values"):
            if name in state_dict:
                current = getattr(self, name)
                current.data = torch.empty_like(state_dict[name], device=current.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: :class:`TipAdapter` with ``fine_tune`` on (the reference's 20 epochs, lr 0.001)."""

    key = "tip_adapter_f"
    label = "Tip-Adapter-F"
    about = "A baseline: Tip-Adapter's cache of your labelled images' features, fine-tuned for a few epochs."
    toy = ToyDefaults("tip_adapter_f.yaml")
    settings = (Setting("lr", "Learning rate", 0.001, 1e-5, 1.0),)
    uses_epochs = True

    def __init__(self, fine_tune: bool = True, **kwargs) -> None:
        super().__init__(fine_tune=fine_tune, **kwargs)
