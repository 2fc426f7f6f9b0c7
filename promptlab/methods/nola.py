"""NoLA: label-free tuning from class names and unlabelled images, assisted by a DINO labeller.

Stage 1 (at construction): a description-based classifier W[C, D] from CLIP's text tower.
Stage 2 (at the start of ``fit``): W pseudo-labels the unlabelled pool (per-class top-k), a frozen
DINO's features of the pool are extracted once and cached, an MLP trained on the pseudo-labels
relabels the whole pool.
Stage 3 (the epochs): visual prompt tokens in CLIP's image encoder, its LayerNorms and a bias-free
head initialised from W learn from the DINO labeller's hard labels (weak view) on strong views.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from promptlab.data.sources import DatasetError, normalise_class_name
from promptlab.data.transforms import test_transform
from promptlab.data.unlabelled import BothViews
from promptlab.labeller import load_dino, select_pseudo_labels, train_labeller
from promptlab.methods.base import CLIPClassifier
from promptlab.methods.zeroshot import resolve_templates
from promptlab.reporting import run_dir
from promptlab.visual_prompts import install_visual_prompts, vision_layernorms, visual_prompts_disabled

log = logging.getLogger(__name__)
STAGES_FILE = "nola_stages.json"
LABELS_FILE = "nola_pseudo_labels.safetensors"


class DescriptionsError(ValueError):
    """A descriptions file that is unreadable or does not describe the dataset's classes."""


def load_descriptions(path: str | Path, class_names: list[str]) -> list[list[str]]:
    """Sentences per class, in class order, from a JSON object {class name: [sentence, ...]}.

    Raises:
        DescriptionsError: unreadable file, or classes missing from it or unknown to the dataset.
    """
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DescriptionsError(
            f"Cannot read descriptions file {str(path)!r} ({error}); give a JSON object."
        ) from error
    if not isinstance(content, dict) or not all(isinstance(v, list) for v in content.values()):
        raise DescriptionsError(f"Descriptions file {str(path)!r} must map each class name to a list of sentences.")
    key = lambda name: normalise_class_name(name).lower()  # noqa: E731
    by_key = {key(name): sentences for name, sentences in content.items()}
    missing = [n for n in class_names if key(n) not in by_key]
    unknown = sorted(set(by_key) - {key(n) for n in class_names})
    if missing or unknown:
        raise DescriptionsError(
            f"Descriptions file {str(path)!r} does not match the dataset's classes"
            + (f"; missing: {', '.join(missing[:5])}" if missing else "")
            + (f"; unknown: {', '.join(unknown[:5])}" if unknown else "")
            + ". Describe exactly the dataset's classes."
        )
    return [[str(s) for s in by_key[key(n)]] for n in class_names]


class NoLA(CLIPClassifier):
    """NoLA (no labels attached): three stages from class names and unlabelled images.

    Needs the data module's ``label_free: true`` (training batches from the unlabelled pool).

    Args:
        descriptions_file: JSON {class name: [sentences]} (the reference ships LLM-written ones);
            None uses the templates alone.
        templates: templates averaged with the descriptions (``ensemble``, ``dataset``, ``openai`` or a list).
        dino: the labeller's backbone: ``toy-dino`` (offline), ``dino_vitb16`` (reference), ``dinov2_vits14``...
        n_prompts: visual prompt tokens (reference: 16); 0 tunes only the LayerNorms and the head.
        label_smoothing: of the stage-3 cross-entropy (reference: 0.1).
        min_per_class: pseudo-labels per class at least (reference k = max(16, 0.2 N / C)).
        fraction_per_class: share of N / C pseudo-labelled per class.
        labeller_epochs: MLP epochs (reference: 50); labeller_lr: its Adam learning rate (1e-3).
        labeller_hidden: MLP hidden width (reference: 256).
        pseudo_labels_file: stages 1-2's output (the pool's labels): loaded from there when it exists
            and fits the pool (skipping both stages), else written there; default: the run folder.
        lr: AdamW learning rate of stage 3 (reference: 0.004), cosine to 0 over the epochs.
        weight_decay: AdamW weight decay (reference: 0.01).
        **kwargs: see :class:`CLIPClassifier` (``momentum``/``warmup_*`` are unused).
    """

    def __init__(
        self,
        descriptions_file: str | None = None,
        templates: str | list[str] = "ensemble",
        dino: str = "dino_vitb16",
        n_prompts: int = 16,
        label_smoothing: float = 0.1,
        min_per_class: int = 16,
        fraction_per_class: float = 0.2,
        labeller_epochs: int = 50,
        labeller_lr: float = 1e-3,
        labeller_hidden: int = 256,
        pseudo_labels_file: str | None = None,
        lr: float = 0.004,
        weight_decay: float = 0.01,
        **kwargs,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
        if n_prompts < 0:
            raise ValueError(f"n_prompts must be 0 or more (got {n_prompts}).")
        descriptions = load_descriptions(descriptions_file, self.class_names) if descriptions_file else None
        self.register_buffer("stage1_weights", self._description_classifier(templates, descriptions))  # (C, D)
        self.head = nn.Linear(self.backbone.embed_dim, len(self.class_names), bias=False)
        with torch.no_grad():
            self.head.weight.copy_(self.stage1_weights)

        visual = self.backbone.model.visual
        self.visual_prompts = nn.Parameter(torch.empty(n_prompts, visual.conv1.out_channels).normal_(std=0.02))
        install_visual_prompts(visual, self.visual_prompts)
        for norm in vision_layernorms(visual):
            norm.requires_grad_(True)
        # Stage-2 output: the DINO labeller's hard label of every pool image (-1: unreadable).
        self.register_buffer("pool_labels", torch.empty(0, dtype=torch.long), persistent=False)  # saved apart
        self.stage_report: dict = {}

    @torch.no_grad()
    def _description_classifier(self, templates, descriptions: list[list[str]] | None) -> torch.Tensor:
        """(C, D): per class, the normalised mean of its descriptions' and templates' text features."""
        templates = resolve_templates(templates, self.hparams.dataset_template)
        rows = []
        for c, name in enumerate(self.prompt_class_names):
            texts = [t.replace("{}", name) for t in templates] + (descriptions[c] if descriptions else [])
            rows.append(F.normalize(self.backbone.encode_text(texts).mean(0), dim=-1))
        return torch.stack(rows)

    def class_features(self) -> torch.Tensor:
        return self.head.weight  # (C, D); trained, so not renormalised

    # -- stages 1 and 2 ---------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        if len(self.pool_labels):  # resumed from a checkpoint: stage 2 is done
            return
        data = self.trainer.datamodule
        if data is None or not getattr(data, "label_free", False):
            raise DatasetError("NoLA trains on unlabelled images: set --data.label_free true (and --data.unlabelled).")
        out_dir = run_dir(self.trainer)
        cached = Path(self.hparams.pseudo_labels_file) if self.hparams.pseudo_labels_file else None
        cached = cached or (out_dir / LABELS_FILE if out_dir else None)
        n_pool = len(data.unlabelled_pool[1])
        if cached is not None and cached.is_file():
            labels = load_file(str(cached))["pool_labels"]
            if len(labels) == n_pool:
                log.info("NoLA: reusing the pseudo-labels of %s.", cached)
                self.pool_labels = labels.to(self.device)
                return
        with visual_prompts_disabled(self.backbone.model.visual):  # stages 1-2 use plain CLIP
            self.pool_labels = self._stage2(data, out_dir).to(self.device)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_file({"pool_labels": self.pool_labels.cpu().contiguous()}, str(cached))

    @torch.no_grad()
    def _stage2(self, data, out_dir: Path | None) -> torch.Tensor:
        root, samples = data.unlabelled_pool
        dino, dino_transform = load_dino(self.hparams.dino)  # fails early, before any scoring, when offline
        dino.to(self.device)
        both_views = BothViews(test_transform(self.preprocess), dino_transform)  # each image is read once
        n = len(samples)
        probabilities, valid = torch.zeros(n, len(self.class_names)), torch.zeros(n, dtype=torch.bool)
        features = None
        for batch in data.pool_dataloader(both_views):
            if batch is None:
                continue
            (clip_images, dino_images), _, indices = batch
            dino_features = dino(dino_images.to(self.device)).float().cpu()
            features = torch.zeros(n, dino_features.shape[1]) if features is None else features
            features[indices] = dino_features
            probabilities[indices] = self._stage1_logits(clip_images).softmax(-1).float().cpu()
            valid[indices] = True
        if features is None:
            raise DatasetError(f"No image of the unlabelled pool in {str(root)!r} could be read; check the files.")
        if not valid.all():
            bad = [samples[i].path for i in torch.nonzero(~valid).flatten().tolist()]
            log.warning("Skipped %d unreadable image(s) in %s, e.g. %s.", len(bad), root, bad[0])
        indices, labels = select_pseudo_labels(
            probabilities, valid, self.class_names, self.hparams.min_per_class, self.hparams.fraction_per_class
        )
        labeller = train_labeller(
            features[indices],
            labels,
            len(self.class_names),
            self.hparams.labeller_epochs,
            self.hparams.labeller_lr,
            self.hparams.labeller_hidden,
            seed=torch.initial_seed() % 2**31,
        )
        pool_labels = torch.where(valid, labeller(features).argmax(-1), -1)
        self.stage_report = {
            "unlabelled_images": n,
            "unreadable_images": int((~valid).sum()),
            "pseudo_labels_stage1": len(labels),
            "pool_label_agreement_stage1_vs_dino": float(
                (pool_labels[valid] == probabilities[valid].argmax(-1)).float().mean()
            ),
        }
        labelled = data.labelled_dataloader(both_views)
        if labelled is not None:  # report each stage on labelled images, when there are some
            self.stage_report |= self._labelled_accuracy(labelled, dino, labeller)
        log.info("NoLA stages 1-2: %s", self.stage_report)
        if out_dir is not None:
            (out_dir / STAGES_FILE).write_text(json.dumps(self.stage_report, indent=2))
        return pool_labels

    def _stage1_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.logit_scale * self.backbone.encode_image(images.to(self.device)) @ self.stage1_weights.T

    @torch.no_grad()
    def _labelled_accuracy(self, loader, dino, labeller) -> dict[str, float]:
        """Stage 1 and stage 2 accuracy on (CLIP view, DINO view) batches of labelled images."""
        correct, total = torch.zeros(2), 0
        for batch in loader:
            if batch is None:
                continue
            (clip_images, dino_images), labels, _ = batch
            stage1 = self._stage1_logits(clip_images).argmax(-1).cpu()
            stage2 = labeller(dino(dino_images.to(self.device)).float().cpu()).argmax(-1)
            correct += torch.tensor([int((stage1 == labels).sum()), int((stage2 == labels).sum())])
            total += len(labels)
        return {
            "stage1_accuracy": float(correct[0]) / max(total, 1),
            "stage2_accuracy": float(correct[1]) / max(total, 1),
        }

    # -- stage 3 ----------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        images, _, indices = batch  # strong views of pool images
        targets = self.pool_labels[indices]  # -1: unreadable in stage 2, ignored
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing, ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))
        self.log("train/agreement", (logits.argmax(-1) == targets).float().mean(), batch_size=len(targets))
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.trainable_parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        epochs = max(self.trainer.max_epochs or 1, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        out_dir = run_dir(self.trainer)
        if out_dir is not None and self.stage_report and (out_dir / "test_metrics.json").is_file():
            stage3 = json.loads((out_dir / "test_metrics.json").read_text())["accuracy"]
            (out_dir / STAGES_FILE).write_text(json.dumps(self.stage_report | {"stage3_accuracy": stage3}, indent=2))

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        return {"class_features": self.head.weight.float()}
