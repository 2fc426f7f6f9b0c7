"""The shared LightningModule: frozen backbone, logits, metrics, the training loop, the reference
optimiser and schedule, checkpoints of the trainable part only, and the method contract's defaults.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, ClassVar, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.data import AttributeDict
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from promptlab.backbone import FrozenCLIP, PreprocessConfig
from promptlab.data.feature_cache import CachedFeatureKind
from promptlab.data.sources import check_class_names, normalise_class_name
from promptlab.deploy.calibration import Calibration
from promptlab.deploy.heads import Head, LinearHead
from promptlab.errors import UserError
from promptlab.methods._calibration import ECE_BINS, calibrate
from promptlab.methods._contract import MethodInfo, Panel
from promptlab.methods._open_set import OpenSetFit, fit_open_set, save_open_set
from promptlab.methods._reports import save_test_report
from promptlab.methods._schedule import warmup_cosine_factor
from promptlab.run_folder import run_dir

COOP_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}  # the CoOp protocol's epochs by shots


class CLIPClassifier(MethodInfo, L.LightningModule):
    """Base of every method: classifies images by cosine similarity to per-class text features.

    Subclasses implement :meth:`class_features` (or override :meth:`logits`), fill the contract of
    :class:`~promptlab.methods._contract.MethodInfo`, and may override :meth:`training_losses`,
    :meth:`export_head` and :meth:`inspection_panels`. Only their own trainable tensors reach the
    optimiser and the checkpoint; the backbone is rebuilt from its name, tag and weights file.

    Args:
        class_names: class names by label (linked from the data module by the CLI).
        backbone: open_clip architecture name.
        pretrained: open_clip pretrained tag, or None for random weights.
        weights_path: local weights file (offline machines, pre-downloaded weights).
        preprocess: overrides of the backbone's preprocessing (``size``, ``mean``, ``std``,
            ``interpolation``), for weights files that come without a config.
        dataset_template: the dataset's hand-written prompt (linked from the data module).
        lr: SGD learning rate (CoOp reference: 0.002).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        warmup_epochs: epochs at the constant warm-up learning rate before the cosine schedule.
        warmup_lr: the constant warm-up learning rate (reference: 1e-5).
        text_checkpointing: recompute the text tower's activations in the backward pass instead of
            storing them (for thousands of classes on a small GPU; slower).
    """

    # True where the logits take the image feature unnormalised (NoLA's head); the exported head says so.
    raw_image_features: ClassVar[bool] = False
    # What the feature cache holds for the method: image features, or the pooled features before the
    # last projection (ProLIP, which trains that projection).
    cached_image_features: ClassVar[CachedFeatureKind] = "projected"

    @property
    def hparams(self) -> AttributeDict:
        """The init args (``save_hyperparameters``), read as attributes: ``self.hparams.lr``."""
        return cast(AttributeDict, super().hparams)

    def __init__(
        self,
        class_names: list[str],
        backbone: str = "ViT-B-16",
        pretrained: str | None = "openai",
        weights_path: str | None = None,
        preprocess: dict | None = None,
        dataset_template: str = "a photo of a {}.",
        lr: float = 0.002,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_epochs: int = 1,
        warmup_lr: float = 1e-5,
        text_checkpointing: bool = False,
        _backbone_module: FrozenCLIP | None = None,
    ) -> None:
        super().__init__()
        check_class_names(class_names, "The class list")
        self.save_hyperparameters(ignore=["_backbone_module"])
        self.class_names = list(class_names)
        # An existing backbone (with_classes) is shared, not built again from its weights.
        self.backbone = _backbone_module or FrozenCLIP(backbone, pretrained, weights_path, preprocess=preprocess)
        self.backbone.set_text_checkpointing(text_checkpointing)
        self.strict_loading = False  # checkpoints hold the trainable part only
        n = len(class_names)
        self.val_metrics = MetricCollection({"acc": MulticlassAccuracy(n, average="micro")}, prefix="val/")
        self.test_metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(n, average="micro"),
                "f1_macro": MulticlassF1Score(n, average="macro"),
            },
            prefix="test/",
        )
        self.test_per_class = MulticlassAccuracy(n, average=None)
        self.test_confusion = MulticlassConfusionMatrix(n)
        # Expected calibration error of the test probabilities, as they are and temperature-scaled.
        self.test_ece = MulticlassCalibrationError(n, n_bins=ECE_BINS)
        self.test_ece_calibrated = MulticlassCalibrationError(n, n_bins=ECE_BINS)
        self.test_nll, self.test_nll_calibrated = MeanMetric(), MeanMetric()
        self.calibration = Calibration()  # fitted on the validation split when testing starts
        self.open_set: OpenSetFit | None = None  # the familiarity rule, fitted when testing starts
        self._eval_features: torch.Tensor | None = None
        self.data = None  # the data module, once connect_data linked the two

    # -- what subclasses provide ------------------------------------------------------------------

    def class_features(self) -> torch.Tensor:
        """(C, D) L2-normalised class text features; differentiable where the method learns."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------

    def connect_data(self, data) -> None:
        """The declared link between a method and its data module, made once both exist (the CLI does
        it after instantiating them; tests call it directly): the data takes the backbone's
        preprocessing and, when the image encoder is frozen, the encoder whose features it caches;
        the method keeps the data module for what it reads besides training batches (NoLA's
        unlabelled pool, the feature-fitted baselines' split features).
        """
        frozen = self.backbone if self.caches_image_features else None
        data.connect_model(self.preprocess, frozen, self.cached_image_features)
        self.data = data

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.backbone.preprocess

    @property
    def prompt_class_names(self) -> list[str]:
        """Class names as prompts spell them (``_`` -> space, as CoOp)."""
        return [normalise_class_name(name) for name in self.class_names]

    @property
    def logit_scale(self) -> float | torch.Tensor:
        """The scale of the logits and of the exported head: CLIP's own unless a method fixes another."""
        return self.backbone.logit_scale

    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        """(B, D) and (C, D) normalised features -> (B, C) CLIP logits."""
        return self.logit_scale * image_features @ class_features.to(image_features.dtype).T

    # -- other classes without retraining --------------------------------------------------------

    @property
    def can_change_classes(self) -> bool:
        """True when nothing the method learned belongs to particular classes, so class names can be
        added or removed without training again (:meth:`with_classes`).
        """
        return self.transfers_to_new_classes

    def with_classes(self, class_names: list[str]) -> CLIPClassifier:
        """The same method with the same learned prompts for other classes: names added, removed or
        reordered, their text features computed with what was learned. The backbone is shared.

        Raises:
            ClassChangeError: the method learned something for each of its classes.
        """
        if not self.can_change_classes:
            raise ClassChangeError(
                f"{type(self).__name__} learned something for each of its {len(self.class_names)} classes, so "
                "classes cannot be added or removed without training again; zero-shot, CoOp with a shared context "
                "and MoCoOp can."
            )
        check_class_names(list(class_names), "The class list")
        hparams = {k: v for k, v in self.hparams.items() if k != "class_names" and not k.startswith("_")}
        model = type(self)(class_names=list(class_names), _backbone_module=self.backbone, **hparams)
        learned = {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}
        model.load_state_dict(learned, strict=False)
        model.calibration = self.calibration
        return model.to(self.device).train(self.training)

    @torch.no_grad()
    def export_head(self) -> Head:
        """What an exported classifier needs besides the image encoder (default: fixed (C, D) class
        features under CLIP's logit scale).
        """
        return LinearHead(self.class_features().detach().float(), float(self.logit_scale))

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """What the app's Inspect page shows of this method after testing (read from ``log_dir``,
        where the method wrote its reports); ``metrics`` are the test metrics ({} without a test).
        """
        return []

    @property
    def caches_image_features(self) -> bool:
        """True while the image encoder is frozen: its features can be computed once and reused."""
        return not self.backbone.tuned_parameters()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) features, normalised unless ``raw_image_features``; differentiable only
        where the image tower trains.

        (B, D) input is taken as features already (batches of the feature cache) and returned as is.
        """
        if images.dim() == 2:
            return images
        with torch.set_grad_enabled(self.training and bool(self.backbone.tuned_parameters())):
            return self.backbone.encode_image(images, normalize=not self.raw_image_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images, or (B, D) cached features -> (B, C) logits."""
        image_features = self.encode_images(images)
        features = self._eval_features if self._eval_features is not None else self.class_features()
        return self.logits(image_features, features)

    def training_targets(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(B,) targets of a training batch (NoLA: the pseudo-labels of its pool images; -1 is ignored)."""
        return labels

    def training_losses(self, image_features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` (what is minimised), ``logits`` (B, C) and any named parts (logged as train/loss_<name>)."""
        logits = self.logits(image_features, self.class_features())
        return {"loss": F.cross_entropy(logits, targets), "logits": logits}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch was unreadable and skipped
            return None
        images, labels, indices = batch
        targets = self.training_targets(labels, indices)
        parts = self.training_losses(self.encode_images(images), targets)
        n, known = len(targets), targets >= 0
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=n)
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items() if k not in ("loss", "logits")}, batch_size=n)
        accuracy = (parts["logits"].argmax(-1)[known] == targets[known]).float().mean()
        self.log("train/acc", accuracy, prog_bar=True, batch_size=n)
        return parts["loss"]

    def on_train_epoch_end(self) -> None:
        if not self.uses_epochs:  # fitted in one go: one epoch (and its checkpoint) is all there is
            self.trainer.should_stop = True

    # Class features are fixed during evaluation: compute them once per epoch, not per batch.
    def _freeze_eval_features(self) -> None:
        with torch.no_grad():
            self._eval_features = self.class_features().detach()

    def _release_eval_features(self) -> None:
        self._eval_features = None

    def on_validation_epoch_start(self) -> None:
        self._freeze_eval_features()

    def on_validation_epoch_end(self) -> None:
        self._release_eval_features()

    def on_test_epoch_start(self) -> None:
        self._freeze_eval_features()
        self.calibration = self.fit_calibration()
        self.open_set = fit_open_set(self, self.data)

    def on_predict_epoch_start(self) -> None:
        self._freeze_eval_features()

    def on_predict_epoch_end(self) -> None:
        self._release_eval_features()

    @torch.no_grad()
    def fit_calibration(self) -> Calibration:
        """The temperature of calibrated probabilities, fitted on the connected data's validation split
        (never on test images); T = 1 with the reason when there is none or the method learns without
        labels.
        """
        if self.learns_from == "unlabelled":
            return Calibration(fitted_on="not calibrated: the method learns without labels, and calibrating needs them")
        loader = self.data.calibration_dataloader() if self.data is not None else None
        if loader is None:
            return Calibration()
        frozen_here = self._eval_features is None  # outside evaluation hooks (export from a config)
        if frozen_here:
            self._freeze_eval_features()
        logits, labels = [], []
        try:
            for batch in loader:
                if batch is not None:  # None: every image of the batch was unreadable and skipped
                    images, batch_labels, _ = batch
                    logits.append(self(images.to(self.device)).float().cpu())
                    labels.append(batch_labels)
        finally:
            if frozen_here:
                self._release_eval_features()
        if not logits:
            return Calibration()
        return calibrate(torch.cat(logits), torch.cat(labels), "validation split")

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch is None:
            return
        images, labels, _ = batch
        self.val_metrics.update(self(images), labels)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        if batch is None:
            return
        images, labels, _ = batch
        logits = self(images)
        self.test_metrics.update(logits, labels)
        self.test_per_class.update(logits, labels)
        self.test_confusion.update(logits, labels)
        logits = logits.float()
        scaled = logits / self.calibration.temperature
        self.test_ece.update(logits.softmax(-1), labels)
        self.test_ece_calibrated.update(scaled.softmax(-1), labels)
        self.test_nll.update(F.cross_entropy(logits, labels, reduction="none"))
        self.test_nll_calibrated.update(F.cross_entropy(scaled, labels, reduction="none"))
        self.log_dict(self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._release_eval_features()
        # Every process computes (under DDP a metric's compute gathers from all); the main one writes.
        metrics = self.test_metrics.compute()
        per_class, confusion = self.test_per_class.compute().cpu(), self.test_confusion.compute().cpu()
        calibration_metrics = {
            "ece_before": self.test_ece,
            "ece_after": self.test_ece_calibrated,
            "nll_before": self.test_nll,
            "nll_after": self.test_nll_calibrated,
        }
        for name, metric in calibration_metrics.items():
            setattr(self.calibration, name, float(metric.compute()))
        for metric in (self.test_per_class, self.test_confusion, *calibration_metrics.values()):
            metric.reset()
        out_dir = run_dir(self.trainer)
        if out_dir is not None:
            accuracy, macro_f1 = float(metrics["test/acc"]), float(metrics["test/f1_macro"])
            open_set = None if self.open_set is None else self.open_set[0].to_dict()
            save_test_report(
                out_dir,
                self.class_names,
                accuracy,
                macro_f1,
                per_class,
                confusion,
                self.calibration.to_dict(),
                open_set,
            )
            if self.open_set is not None:
                save_open_set(out_dir, self.open_set)

    def predict_step(self, batch, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) probabilities and the (B,) indices of the images (the data module knows their paths)."""
        if batch is None:
            return torch.empty(0, len(self.class_names)), torch.empty(0, dtype=torch.long)
        images, _, indices = batch
        return self(images).softmax(dim=-1).float().cpu(), indices.cpu()

    # -- optimisation: SGD, constant warm-up, then cosine (Dassl) --------------------------------

    def trainable_parameters(self) -> list[torch.nn.Parameter] | list[dict]:
        """The optimiser's parameters, or parameter groups (dicts with ``params`` and an ``lr``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay (CoOp, MoCoOp); NoLA uses AdamW."""
        hp = self.hparams
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def lr_factor(self, epoch: int, max_epochs: int, base_lr: float) -> float:
        """Learning-rate multiplier of an epoch for a parameter group whose learning rate is ``base_lr``:
        Dassl's constant warm-up (every group at ``warmup_lr``, as Dassl sets them all), then cosine.
        """
        hp = self.hparams
        return warmup_cosine_factor(epoch, max_epochs, hp.warmup_epochs, hp.warmup_lr / base_lr)

    def configure_optimizers(self) -> Any:
        params = self.trainable_parameters()
        if not params:
            return None
        optimizer = self.build_optimizer(params)
        trainer = self._trainer  # None outside a Trainer (the property would raise)
        max_epochs = max(trainer.max_epochs or 1, 1) if trainer is not None else 1
        factors = [
            partial(self.lr_factor, max_epochs=max_epochs, base_lr=group["lr"]) for group in optimizer.param_groups
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)  # type: ignore[arg-type]  # partials of one int
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- checkpoints: trainable part only -----------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        tuned = {f"backbone.{name}" for name in self.backbone.tuned_parameters()}
        random_weights = self.backbone.weights_file is None  # nothing else could rebuild them: keep them
        checkpoint["state_dict"] = {
            k: v
            for k, v in checkpoint["state_dict"].items()
            if not k.startswith("backbone.") or k in tuned or random_weights
        }
        checkpoint["promptlab_method"] = type(self).__name__


class ClassChangeError(UserError):
    """A method's classes cannot be changed without training again; the message says which can."""
