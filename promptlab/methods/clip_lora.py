"""CLIP-LoRA: low-rank adapters on the attention of both CLIP towers, trained on labelled images."""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from promptlab.backbone import LoRASpec
from promptlab.methods._base import CLIPClassifier
from promptlab.methods._contract import Setting, ToyDefaults


class CLIPLoRA(CLIPClassifier):
    """Low-Rank Adaptation of CLIP (Zanella and Ben Ayed, 2024), as MaxZanella/CLIP-LoRA computes it.

    Rank-``rank`` adapters on the query, key and value projections of every block of both towers
    (:mod:`promptlab.backbone.lora`): ``W x + alpha / sqrt(rank) * B A dropout(x)``, B = 0 at the start,
    so the untrained classifier is zero-shot CLIP with the prompt ``template``. Every training step
    encodes the C prompts through the adapted text tower and the batch through the adapted image
    tower (nothing can be cached while the image tower trains); AdamW with a cosine schedule per step
    to ``min_lr``. Evaluation and export add ``B A`` into the weights: no extra cost per image.

    Differences from the reference, each the paper's intent: the logit scale is the backbone's (the
    reference hard-codes 100, OpenAI CLIP's own), so other CLIPs keep theirs; training runs in fp32
    on the CPU and under the Trainer's precision on a GPU (bf16-mixed) instead of fp16 autocast with a
    gradient scaler; the number of steps is the Trainer's (``max_steps`` = 500 x shots in the shipped
    configs, as the reference's ``n_iters * shots``).

    Args:
        rank: r of every adapter (reference: 2).
        alpha: the adapters are scaled by ``alpha / sqrt(rank)`` (reference: 1, so 0.707 at rank 2).
        lora_dropout: dropout on the adapters' input in training (reference: 0.25).
        towers: ``text``, ``image`` or both (reference: both).
        blocks: indices of the adapted blocks in each tower; None for all (reference: all).
        projections: some of ``q``, ``k``, ``v``, ``o`` (reference: q, k, v).
        template: the one prompt of every class (reference: "a photo of a {}." for every dataset);
            None for the dataset's hand-written template.
        logit_scale: the logits' scale; None for the backbone's (100 for OpenAI CLIP, as the reference).
        lr: AdamW learning rate (reference: 2e-4).
        weight_decay: AdamW weight decay (reference: 1e-2).
        min_lr: the cosine schedule's final learning rate (reference: 1e-6).
        **kwargs: see :class:`CLIPClassifier` (its SGD and warm-up settings are not used).
    """

    key = "clip_lora"
    label = "CLIP-LoRA"
    about = (
        "Adapts CLIP itself: small low-rank updates to the attention of both its image and text encoders, "
        "learned from your labelled images; the few-shot baseline recent papers report."
    )
    settings = (
        Setting("rank", "LoRA rank", 2, 1, 64, integer=True),
        Setting("lr", "Learning rate", 2e-4, 1e-6, 0.1),
    )
    toy = ToyDefaults("clip_lora.yaml")
    image_encoder_per_step = True

    # buffers registered in __init__
    prompt_tokens: torch.Tensor

    def __init__(
        self,
        rank: int = 2,
        alpha: float = 1.0,
        lora_dropout: float = 0.25,
        towers: list[str] | None = None,
        blocks: list[int] | None = None,
        projections: list[str] | None = None,
        template: str | None = "a photo of a {}.",
        logit_scale: float | None = None,
        lr: float = 2e-4,
        weight_decay: float = 1e-2,
        min_lr: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
        self.spec = LoRASpec(
            rank=rank,
            alpha=alpha,
            dropout=lora_dropout,
            towers=tuple(towers or ("text", "image")),
            blocks=None if blocks is None else tuple(blocks),
            projections=tuple(projections or ("q", "k", "v")),
        )
        self.lora_parameters = self.backbone.add_lora(self.spec)
        prompt = template or self.hparams.dataset_template
        tokens = self.backbone.tokenize([prompt.format(name) for name in self.prompt_class_names])
        tokens = tokens[:, : self.backbone.prompt_length(tokens)]  # (C, L): rows after the last EOT never matter
        self.register_buffer("prompt_tokens", tokens, persistent=False)
        same = (tokens == tokens[:1]).all(dim=0).int()
        self.shared_prefix = int(same.cumprod(0).sum())  # leading positions every prompt shares

    @property
    def text_adapted(self) -> bool:
        """True when the text tower has adapters (its features then train)."""
        return "text" in self.spec.towers

    @override
    def class_features(self) -> torch.Tensor:
        """(C, D) normalised features of the prompts through the (adapted) text tower."""
        backbone = self.backbone
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.text_adapted):
            embeddings = backbone.embed_tokens(self.prompt_tokens)  # (C, L, width)
            # With the adapters' dropout active every prompt draws its own mask, as the reference's
            # separate encoding does: a prefix encoded once would share it.
            dropout_active = self.training and self.text_adapted and self.spec.dropout > 0
            return backbone.encode_prompts(
                embeddings,
                backbone.pool_index(self.prompt_tokens),
                shared_prefix=0 if dropout_active else self.shared_prefix,
            )

    @property
    @override
    def logit_scale(self) -> float | torch.Tensor:
        """``logit_scale`` when given, else the backbone's."""
        return self.hparams.logit_scale or self.backbone.logit_scale

    @property
    @override
    def caches_image_features(self) -> bool:
        return "image" not in self.spec.towers

    @override
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.lora_parameters)

    @override
    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.hparams.lr, betas=(0.9, 0.999), weight_decay=self.hparams.weight_decay)

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer(self.trainable_parameters())
        trainer = self._trainer
        total = max(int(trainer.estimated_stepping_batches), 1) if trainer is not None else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=self.hparams.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
