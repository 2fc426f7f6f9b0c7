"""NoLA: label-free tuning from class names and unlabelled images, assisted by a DINO labeller.

Stage 1 (at construction): a description-based classifier W[C, D] from CLIP's text tower.
Stage 2 (at the start of ``fit``): W pseudo-labels the unlabelled pool (per-class top-k), a frozen
DINO's features of the pool are extracted once and cached, an MLP trained on the pseudo-labels
relabels the whole pool.
Stage 3 (the epochs): visual prompt tokens in CLIP's image encoder, its LayerNorms and a bias-free
head initialised from W learn from the DINO labeller's hard labels (weak view) on strong views. As in
the reference, the head's logits are the raw ``f @ W.T`` of the unnormalised image feature (no logit
scale), AdamW's learning rate is constant and biases get no weight decay.
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
from typing_extensions import override

from promptlab.data.dataset_error import DatasetError
from promptlab.data.transforms import test_transform
from promptlab.deploy.heads import Head, LinearHead
from promptlab.methods._base import CLIPClassifier
from promptlab.methods._contract import Bars, Panel, Setting, Text, ToyDefaults
from promptlab.methods._descriptions import load_descriptions
from promptlab.methods._labeller import load_dino, note_foreign_normalisation, select_pseudo_labels, train_labeller
from promptlab.methods._templates import ensemble_features, resolve_templates
from promptlab.run_folder import TEST_METRICS_FILE, run_dir

log = logging.getLogger(__name__)
STAGES_FILE = "nola_stages.json"
LABELS_FILE = "nola_pseudo_labels.safetensors"
WEAK_LABELS_DISAGREEMENT = 0.3  # the Inspect page warns above this share of pool images
# Without labelled images, a run judges itself by how far its DINO labeller agrees with zero-shot CLIP on the
# pool: runs outside this band lost to zero-shot (benchmarks/nola_loss_signals.py: 12 runs, 3 labellers, 2
# generated worlds; fitted on the toy world, 6 of 6 right on the other). Below it the labeller is weak;
# above it, it adds little to zero-shot while the visual prompts still cost accuracy.
LABELLER_VS_ZERO_SHOT_BAND = (0.694, 0.811)


class NoLA(CLIPClassifier):
    """NoLA (no labels attached): three stages from class names and unlabelled images.

    Needs the data module's ``label_free: true`` (training batches from the unlabelled pool).

    Args:
        descriptions_file: JSON {class name: [sentences]} (the reference ships LLM-written ones);
            None uses the templates alone.
        templates: templates averaged with the descriptions (``ensemble``, ``dataset``, ``openai`` or a list;
            the reference's per-dataset lists are in ``configs/nola/templates/``).
        dino: the labeller's backbone: ``toy-dino`` (offline), ``dino_vitb16`` (reference), ``dinov2_vits14``...
        n_prompts: visual prompt tokens (reference: 16); 0 tunes only the LayerNorms and the head.
        label_smoothing: of the stage-3 cross-entropy (reference: 0.1).
        min_per_class: pseudo-labels per class at least (reference k = max(16, 0.2 N / C)).
        fraction_per_class: share of N / C pseudo-labelled per class.
        labeller_epochs: MLP epochs (reference: 50); labeller_lr: its Adam learning rate (1e-3).
        labeller_hidden: MLP hidden width (reference: 256).
        pseudo_labels_file: stages 1-2's output (the pool's labels): loaded from there when it exists
            and fits the pool (skipping both stages), else written there; default: the run folder.
        lr: AdamW learning rate of stage 3 (reference: 0.004), constant.
        weight_decay: AdamW weight decay (reference: 0.01), not applied to biases.
        **kwargs: see :class:`CLIPClassifier` (``momentum``/``warmup_*`` are unused).
    """

    key = "nola"
    label = "NoLA"
    about = "No labels: learns from class names and the unlabelled pool (labelled images only measure it)."
    learns_from = "unlabelled"
    settings = (Setting("lr", "Learning rate", 0.004, 1e-5, 1.0),)
    toy = ToyDefaults("nola.yaml", drop=("descriptions_file",))
    image_encoder_per_step = True  # stage 3 trains visual prompts
    descriptions_arg = "descriptions_file"
    min_images_per_class = 0
    raw_image_features = True  # stage-3 logits are f @ W.T of the unnormalised feature

    # buffers registered in __init__
    stage1_weights: torch.Tensor
    pool_labels: torch.Tensor

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

        width = self.backbone.image_width
        bound = math.sqrt(6.0 / (3 * 16 * 16 + width))  # the reference's Xavier bound, 16x16 patch fixed: 0.0625
        self.visual_prompts = nn.Parameter(torch.empty(n_prompts, width).uniform_(-bound, bound))
        self.backbone.add_visual_prompts(self.visual_prompts)
        for norm in self.backbone.image_layernorms():
            norm.requires_grad_(True)
        # Stage-2 output: the DINO labeller's hard label of every pool image (-1: unreadable).
        self.register_buffer("pool_labels", torch.empty(0, dtype=torch.long), persistent=False)  # saved apart
        self.stage1_pool_labels: torch.Tensor | None = None  # (N,) the description classifier's pool labels
        self.zero_shot_pool_labels: torch.Tensor | None = None  # (N,) zero-shot CLIP's, before any training
        self.stage_report: dict = {}

    def _description_classifier(self, templates, descriptions: list[list[str]] | None) -> torch.Tensor:
        """(C, D): per class, the normalised mean of its descriptions' and templates' text features."""
        templates = resolve_templates(templates, self.hparams.dataset_template)
        return ensemble_features(self.backbone, self.prompt_class_names, templates, descriptions)

    @override
    def class_features(self) -> torch.Tensor:
        return self.head.weight  # (C, D); trained, so not renormalised

    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        """(B, D) unnormalised image features -> (B, C) ``f @ W.T``, the reference's head (no logit scale)."""
        return image_features @ class_features.to(image_features.dtype).T

    # -- stages 1 and 2 ---------------------------------------------------------------------------

    @override
    def on_fit_start(self) -> None:
        if len(self.pool_labels):  # resumed from a checkpoint: stage 2 is done
            return
        data = self.data
        if data is None or not getattr(data, "label_free", False):
            raise DatasetError("NoLA trains on unlabelled images: set --data.label_free true (and --data.unlabelled).")
        out_dir = run_dir(self.trainer)
        cached = Path(self.hparams.pseudo_labels_file) if self.hparams.pseudo_labels_file else None
        if cached is not None and not cached.is_file():
            # Decided where the run folder is known (the main process), for every process alike.
            problem = self.trainer.strategy.broadcast(new_labels_file_problem(cached, out_dir))
            if problem:
                raise DatasetError(problem)
            log.info("NoLA: %s does not exist yet; stages 1-2 compute the pool's labels and write them there.", cached)
        cached = cached or (out_dir / LABELS_FILE if out_dir else None)
        # Under data-parallel training the main process alone reads or computes the pool's labels (one pass
        # over the pool, one Ray job with --data.engine ray, one writer of the labels file) and hands the
        # others its result.
        outcome: dict[str, torch.Tensor] | BaseException | None = None
        if self.trainer.is_global_zero:
            try:
                outcome = self._saved_pool_labels(cached, len(data.unlabelled_pool[1]))
                if outcome is None:
                    with self.backbone.without_visual_prompts():  # stages 1-2 use plain CLIP
                        outcome = self._stage2_outcome(data, out_dir)
                    if cached is not None:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        save_file({key: labels.contiguous() for key, labels in outcome.items()}, str(cached))
            except Exception as error:  # the other processes raise it too, instead of waiting forever
                outcome = error
        shared = self.trainer.strategy.broadcast(outcome)
        if isinstance(shared, BaseException):
            raise outcome if isinstance(outcome, BaseException) else shared
        assert shared is not None
        self.pool_labels = shared["pool_labels"].to(self.device)
        self.stage1_pool_labels = shared.get("stage1_labels")
        self.zero_shot_pool_labels = shared.get("zero_shot_labels")

    @staticmethod
    def _saved_pool_labels(path: Path | None, n_pool: int) -> dict[str, torch.Tensor] | None:
        """The pseudo-labels file's labels when it exists and covers a pool of ``n_pool`` images, else None."""
        if path is None or not path.is_file():
            return None
        saved = load_file(str(path))
        if len(saved["pool_labels"]) != n_pool:
            return None
        log.info("NoLA: reusing the pseudo-labels of %s.", path)
        return saved

    def _stage2_outcome(self, data, out_dir: Path | None) -> dict[str, torch.Tensor]:
        """Stages 1-2's (N,) labels of the pool, as the pseudo-labels file stores them (-1: unreadable)."""
        pool_labels = self._stage2(data, out_dir).cpu()
        stage1, zero_shot = self.stage1_pool_labels, self.zero_shot_pool_labels
        assert stage1 is not None and zero_shot is not None  # set by _stage2
        return {"pool_labels": pool_labels, "stage1_labels": stage1.cpu(), "zero_shot_labels": zero_shot.cpu()}

    @torch.no_grad()
    def on_fit_end(self) -> None:
        """How far the trained classifier agrees, on the pool, with the DINO labeller that taught it, with the
        description classifier (stage 1) and with zero-shot CLIP (labelled before training: NoLA trains the
        tower's layer norms): weak labels show as disagreement, and without labelled images these
        agreements are all a run can tell about itself (:func:`zero_shot_panel`).
        """
        data = self.data
        if data is None or not len(self.pool_labels) or not getattr(data, "label_free", False):
            return
        out_dir = run_dir(self.trainer)  # every process asks (a broadcast under DDP); the main one reports
        if not self.trainer.is_global_zero:
            return
        final = torch.full_like(self.pool_labels.cpu(), -1)
        training, _ = self.training, self.eval()
        for batch in data.pool_dataloader(test_transform(self.preprocess)):
            if batch is not None:
                images, _, indices = batch
                final[indices] = self(images.to(self.device)).argmax(-1).cpu()
        self.train(training)
        teacher = self.pool_labels.cpu()
        self.stage_report = (self.stage_report or {}) | {"pool_agreement_final_vs_dino": pool_agreement(final, teacher)}
        if self.stage1_pool_labels is not None:
            self.stage_report["pool_agreement_final_vs_stage1"] = pool_agreement(final, self.stage1_pool_labels.cpu())
        if self.zero_shot_pool_labels is not None:
            zero_shot = self.zero_shot_pool_labels.cpu()
            self.stage_report["pool_agreement_final_vs_zero_shot"] = pool_agreement(final, zero_shot)
            self.stage_report["pool_agreement_dino_vs_zero_shot"] = pool_agreement(teacher, zero_shot)
        if out_dir is not None:
            (out_dir / STAGES_FILE).write_text(json.dumps(self.stage_report, indent=2))

    @torch.no_grad()
    def _stage2(self, data, out_dir: Path | None) -> torch.Tensor:
        root, samples = data.unlabelled_pool
        dino = load_dino(self.hparams.dino).to(self.device)  # fails early, before any scoring, when offline
        note = note_foreign_normalisation(self.hparams.dino, self.preprocess.mean, self.preprocess.std)
        if note:
            log.info(note)
        view = test_transform(self.preprocess)  # CLIP's test view, for CLIP and DINO alike (the reference)
        n = len(samples)
        zero_shot_weights = ensemble_features(self.backbone, self.prompt_class_names, [self.hparams.dataset_template])
        if getattr(data, "engine", "local") == "ray":
            probabilities, zero_shot, features, valid = self._pool_scores_on_ray(data, dino, view, zero_shot_weights)
        else:
            probabilities, zero_shot, features, valid = self._pool_scores(data, dino, view, zero_shot_weights)
        if not valid.any():
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
        self.stage1_pool_labels = torch.where(valid, probabilities.argmax(-1), -1)  # (N,), -1: unreadable
        self.zero_shot_pool_labels = torch.where(valid, zero_shot, -1)
        self.stage_report = {
            "unlabelled_images": n,
            "unreadable_images": int((~valid).sum()),
            "pseudo_labels_stage1": len(labels),
            "pool_label_agreement_stage1_vs_dino": pool_agreement(pool_labels, self.stage1_pool_labels),
        }
        labelled = data.labelled_dataloader(view)
        if labelled is not None:  # report each stage on labelled images, when there are some
            self.stage_report |= self._labelled_accuracy(labelled, dino, labeller)
        log.info("NoLA stages 1-2: %s", self.stage_report)
        if out_dir is not None:
            (out_dir / STAGES_FILE).write_text(json.dumps(self.stage_report, indent=2))
        return pool_labels

    def _pool_scores(
        self, data, dino: nn.Module, view, zero_shot_weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1's (N, C) probabilities, zero-shot CLIP's (N,) labels (``zero_shot_weights``: (C, D) class
        features) and DINO's (N, D) features of the pool, and which of its (N,) images were readable (zeros
        for the others).
        """
        n = len(data.unlabelled_pool[1])
        probabilities, valid = torch.zeros(n, len(self.class_names)), torch.zeros(n, dtype=torch.bool)
        zero_shot, features = torch.zeros(n, dtype=torch.long), torch.zeros(n, 0)
        for batch in data.pool_dataloader(view):
            if batch is None:
                continue
            images, _, indices = batch
            dino_features = dino(images.to(self.device)).float().cpu()
            features = torch.zeros(n, dino_features.shape[1]) if not features.shape[1] else features
            features[indices] = dino_features
            clip_features = self.backbone.encode_image(images.to(self.device))  # (B, D)
            probabilities[indices] = self._stage1_logits(clip_features).softmax(-1).float().cpu()
            zero_shot[indices] = (clip_features @ zero_shot_weights.T).argmax(-1).cpu()
            valid[indices] = True
        return probabilities, zero_shot, features, valid

    def _pool_scores_on_ray(
        self, data, dino: nn.Module, view, zero_shot_weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_pool_scores` computed by a Ray Data actor pool (``--data.engine ray``)."""
        from promptlab.data.ray_encoding import BoundEncoder, ray_encode

        root, samples = data.unlabelled_pool
        encoders = {"dino": dino, "clip": BoundEncoder(self.backbone, "encode_image", "without_visual_prompts")}
        paths = [str(root / sample.path) for sample in samples]
        encoded, errors = ray_encode(encoders, paths, [0] * len(paths), view, 1, data.test_batch_size, data.ray_actors)
        valid = torch.tensor([not error for error in errors], dtype=torch.bool)
        for error in filter(None, errors):
            log.debug("Skipping unreadable image: %s", error)
        clip_features = encoded["clip"][:, 0].to(self.device)  # (N, D), normalised by encode_image
        probabilities = torch.where(valid[:, None], self._stage1_logits(clip_features).softmax(-1).float().cpu(), 0.0)
        zero_shot = (clip_features @ zero_shot_weights.T).argmax(-1).cpu()
        return probabilities, zero_shot, encoded["dino"][:, 0], valid

    def _stage1_logits(self, clip_features: torch.Tensor) -> torch.Tensor:
        """(B, D) plain CLIP image features -> (B, C) the description classifier's logits."""
        return self.backbone.logit_scale * clip_features @ self.stage1_weights.T

    @torch.no_grad()
    def _labelled_accuracy(self, loader, dino, labeller) -> dict[str, float]:
        """Stage 1 and stage 2 accuracy on batches of labelled images (CLIP's test view)."""
        correct, total = torch.zeros(2), 0
        for batch in loader:
            if batch is None:
                continue
            images, labels, _ = batch
            stage1 = self._stage1_logits(self.backbone.encode_image(images.to(self.device))).argmax(-1).cpu()
            stage2 = labeller(dino(images.to(self.device)).float().cpu()).argmax(-1)
            correct += torch.tensor([int((stage1 == labels).sum()), int((stage2 == labels).sum())])
            total += len(labels)
        return {
            "stage1_accuracy": float(correct[0]) / max(total, 1),
            "stage2_accuracy": float(correct[1]) / max(total, 1),
        }

    # -- stage 3 ----------------------------------------------------------------------------------

    @override
    def training_targets(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.pool_labels[indices]  # strong views of pool images; -1: unreadable in stage 2, ignored

    @override
    def training_losses(self, image_features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.logits(image_features, self.class_features())
        loss = F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing, ignore_index=-1)
        return {"loss": loss, "logits": logits}  # train/acc: agreement with the DINO labeller

    def trainable_parameters(self) -> list[dict]:
        """Two groups as the reference's: biases (the LayerNorms') without weight decay, the rest with it."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        return [
            {"params": [p for n, p in named if "bias" not in n]},
            {"params": [p for n, p in named if "bias" in n], "weight_decay": 0.0},
        ]

    @override
    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    @override
    def lr_factor(self, epoch: int, max_epochs: int, base_lr: float) -> float:
        return 1.0  # the reference's MultiStepLR without milestones: constant

    @override
    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        out_dir = run_dir(self.trainer)
        if out_dir is not None and self.stage_report and (out_dir / TEST_METRICS_FILE).is_file():
            stage3 = json.loads((out_dir / TEST_METRICS_FILE).read_text())["accuracy"]
            (out_dir / STAGES_FILE).write_text(json.dumps(self.stage_report | {"stage3_accuracy": stage3}, indent=2))

    @property
    def can_change_classes(self) -> bool:
        """False: the head learned one vector per class."""
        return False  # its head was trained on pseudo-labels of these classes

    @torch.no_grad()
    @override
    def export_head(self) -> Head:
        return LinearHead(self.head.weight.detach().float(), 1.0, raw_features=True)

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """How many pool images each class got as pseudo-labels, and each stage's accuracy."""
        try:
            labels = load_file(str(log_dir / LABELS_FILE))["pool_labels"]
        except (OSError, RuntimeError, KeyError):
            return []
        counts = {name: int((labels == c).sum()) for c, name in enumerate(self.class_names)}
        panels: list[Panel] = [
            Bars("What NoLA learned from: pseudo-labels of the unlabelled pool", counts, axis="unlabelled images")
        ]
        try:
            stages = json.loads((log_dir / STAGES_FILE).read_text())
        except (OSError, ValueError):
            stages = {}
        if "stage1_accuracy" in stages:
            text = (
                "Accuracy of the pseudo-labellers on your labelled images: the description-based CLIP classifier "
                f"{stages['stage1_accuracy']:.1%}, the DINO labeller trained on its picks "
                f"{stages['stage2_accuracy']:.1%}; the final classifier {metrics.get('accuracy', 0):.1%}."
            )
            panels.append(Text("", text))
        else:
            hint = "Upload labelled images to every class to measure how accurate these pseudo-labels are."
            panels.append(Text("", "", hint))
        if "pool_agreement_final_vs_dino" in stages:
            panels.append(agreement_panel(stages))
        if "stage1_accuracy" not in stages and "pool_agreement_dino_vs_zero_shot" in stages:
            panels.append(zero_shot_panel(stages["pool_agreement_dino_vs_zero_shot"]))
        return panels


def pool_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the pool images both (N,) label vectors label (-1: unreadable) on which they agree."""
    both = (a >= 0) & (b >= 0)
    return float((a[both] == b[both]).float().mean()) if both.any() else 0.0


def agreement_panel(stages: dict) -> Text:
    """How far NoLA's three labellers agree on the unlabelled pool; a warning when the final classifier
    disagrees with its own teacher (the DINO labeller) on more than ``WEAK_LABELS_DISAGREEMENT``.
    """
    final_vs_dino, teachers = stages["pool_agreement_final_vs_dino"], stages["pool_label_agreement_stage1_vs_dino"]
    parts = [
        f"the description classifier and the DINO labeller agree on {teachers:.0%}",
        f"the final classifier agrees with the DINO labeller (its teacher) on {final_vs_dino:.0%}",
    ]
    if "pool_agreement_final_vs_stage1" in stages:
        parts.append(f"and with the description classifier on {stages['pool_agreement_final_vs_stage1']:.0%}")
    text = f"On the {stages.get('unlabelled_images', '')} unlabelled images, " + ", ".join(parts) + "."
    warning = ""
    if 1 - final_vs_dino > WEAK_LABELS_DISAGREEMENT:
        warning = (
            f"The final classifier disagrees with the labels it was trained on for {1 - final_vs_dino:.0%} of the "
            "pool: those labels are weak. Better class descriptions, more unlabelled images, or a few labelled "
            "images per class (and a method that learns from labels) would help."
        )
    return Text("How far NoLA's labels agree", text, warning=warning)


def zero_shot_panel(labeller_vs_zero_shot: float) -> Text:
    """Whether a run without labelled images shows the sign of a loss to zero-shot CLIP that
    :data:`LABELLER_VS_ZERO_SHOT_BAND` describes: a warning outside the band, a plain note inside it.
    """
    low, high = LABELLER_VS_ZERO_SHOT_BAND
    changed = 1 - labeller_vs_zero_shot
    fact = f"NoLA's DINO labeller changed zero-shot CLIP's answer on {changed:.0%} of your unlabelled images."
    caveat = (
        f"On generated test worlds, runs that changed between {1 - high:.0%} and {1 - low:.0%} beat zero-shot and "
        "the others lost to it. There zero-shot is right on about 70% of the images, and where it is less accurate "
        "a good labeller changes more of its answers: this is a sign, not a measurement. Label a few images per "
        "class and train again to measure it (the run then offers zero-shot when zero-shot does better)."
    )
    if labeller_vs_zero_shot > high:
        warning = (
            f"This run probably did worse than zero-shot CLIP: its labeller changed only {changed:.0%} of "
            "zero-shot's answers, which adds little, while NoLA's visual prompts cost accuracy."
        )
    elif labeller_vs_zero_shot < low:
        warning = (
            f"This run probably did worse than zero-shot CLIP: its labeller changed {changed:.0%} of zero-shot's "
            "answers; on generated worlds, labellers that changed that many were wrong more often than zero-shot."
        )
    else:
        warning = ""
    text = fact + (" Nothing here suggests it did worse than zero-shot CLIP. " if not warning else " ") + caveat
    return Text("Did it beat zero-shot CLIP? Not measured: no labelled images", text, warning=warning)


def new_labels_file_problem(path: Path, run_folder: Path | None) -> str | None:
    """Why a ``pseudo_labels_file`` that does not exist yet cannot be written, or None: stages 1-2 write new
    ones inside the run folder only (an unset shell variable in the path must not write at the file
    system's root).
    """
    if run_folder is not None and path.resolve().is_relative_to(run_folder.resolve()):
        return None
    return (
        f"pseudo_labels_file {str(path)!r} does not exist, and NoLA writes new ones only inside the run folder "
        f"({run_folder or 'none: this run has no logger'}); pass an existing file or leave the option out."
    )
