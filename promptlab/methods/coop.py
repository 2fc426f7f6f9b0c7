"""CoOp: learned context vectors in front of (or around) the class name."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from typing_extensions import override

from promptlab.methods._base import COOP_EPOCHS, CLIPClassifier
from promptlab.methods._contract import Panel, Setting, Table, ToyDefaults
from promptlab.methods._inspection import nearest_words
from promptlab.methods._prompts import ClassPosition, build_prompt_layout, coop_segments, splice_context


class CoOp(CLIPClassifier):
    """Context Optimization (Zhou et al., 2022).

    Three differences from the reference code, each a decision pinned by ``tests/methods/test_coop_reference.py``:
    every *token* of ``ctx_init`` is learned (the reference counts words, so "itap of a" learns "it",
    "ap", "of" and keeps "a" fixed); ``ctx_init`` with ``class_specific`` gives every class its own copy
    (the reference then ignores class-specific contexts); and at the middle and front positions the
    period follows the second context half for every name (the reference cuts the name out of the
    tokens of "name.", so for the 6 of 1000 ImageNet names whose last token merges with the period,
    such as "kite (bird of prey)", its period moves before the context).

    Args:
        n_ctx: number of context vectors (ignored when ``ctx_init`` is given: its token count is used).
        ctx_init: initialisation phrase (``a photo of a``), or None for random N(0, 0.02) vectors.
        class_specific: one context per class (CSC) instead of one shared by all classes.
        class_position: where the class name goes: ``end``, ``middle`` or ``front``.
        **kwargs: see :class:`CLIPClassifier`.
    """

    key = "coop"
    label = "CoOp"
    about = "Learns 16 context words in front of your class names from your labelled images."
    settings: ClassVar[tuple[Setting, ...]] = (
        Setting("n_ctx", "Context words", 16, 1, 32, integer=True),
        Setting("lr", "Learning rate", 0.002, 1e-5, 1.0),
    )
    toy = ToyDefaults("coop.yaml")
    epochs_by_shots = COOP_EPOCHS

    # buffers registered in __init__
    token_embeddings: torch.Tensor
    context_slots: torch.Tensor
    pool_index: torch.Tensor

    def __init__(
        self,
        n_ctx: int = 16,
        ctx_init: str | None = None,
        class_specific: bool = False,
        class_position: ClassPosition = "end",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        backbone = self.backbone
        n_classes = len(self.class_names)
        if ctx_init:
            init_ids = torch.tensor(backbone.word_ids(ctx_init.replace("_", " ")))
            n_ctx = len(init_ids)
            ctx = backbone.embed_tokens(init_ids).clone()  # (n_ctx, width)
        else:
            if n_ctx < 1:
                raise ValueError(f"n_ctx must be at least 1 (got {n_ctx}); or give ctx_init.")
            ctx = torch.empty(n_ctx, backbone.text_width).normal_(std=0.02)
        if class_specific:
            ctx = ctx.unsqueeze(0).repeat(n_classes, 1, 1)  # (C, n_ctx, width)
        self.ctx = nn.Parameter(ctx.float())
        self.n_ctx = n_ctx

        layout = build_prompt_layout(backbone, self.prompt_class_names, coop_segments(n_ctx, class_position))
        self.register_buffer("token_embeddings", backbone.embed_tokens(layout.token_ids).detach(), persistent=False)
        self.register_buffer("context_slots", layout.context_slots, persistent=False)  # (C, n_ctx)
        self.register_buffer("pool_index", layout.pool_index, persistent=False)  # (C,)
        # Class-specific contexts differ per class, so only a shared context can be encoded once.
        self.shared_prefix = 0 if class_specific else layout.shared_prefix

    def prompt_embeddings(self) -> torch.Tensor:
        """(C, L, width) prompt embeddings with the context vectors in their slots."""
        return splice_context(self.token_embeddings, self.context_slots, self.ctx)

    @override
    def class_features(self) -> torch.Tensor:
        return self.backbone.encode_prompts(self.prompt_embeddings(), self.pool_index, shared_prefix=self.shared_prefix)

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """The nearest vocabulary words of every context vector, one table per context."""
        contexts = self.ctx.detach() if self.ctx.dim() == 3 else self.ctx.detach()[None]  # (C or 1, n_ctx, width)
        names = ["shared context"] if len(contexts) == 1 else self.class_names
        panels: list[Panel] = []
        for i, (name, context) in enumerate(zip(names, contexts, strict=True)):
            rows = [
                {"position": p + 1, **{f"word {k + 1}": f"{w} ({d:.2f})" for k, (w, d) in enumerate(words)}}
                for p, words in enumerate(nearest_words(context, self.backbone))
            ]
            title = "What CoOp learned: nearest words to each context vector" if i == 0 else ""
            caption = f"**{name}**" + (
                " · the learned vectors sit between words; their nearest vocabulary words rarely read as a phrase."
                if i == 0
                else ""
            )
            panels.append(Table(title, rows, caption))
        return panels

    @property
    def can_change_classes(self) -> bool:
        """True for a shared context: added names take the same learned words."""
        return self.ctx.dim() == 2  # a class-specific context belongs to its class

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Class-specific contexts belong to their classes: loading them for other classes (base-to-new,
        # another dataset) would silently give each class another class's context.
        trained = list(checkpoint.get("hyper_parameters", {}).get("class_names", self.class_names))
        if self.ctx.dim() == 3 and trained != self.class_names:
            raise ValueError(
                f"This CoOp checkpoint has class-specific contexts for {len(trained)} classes ({', '.join(trained[:5])}"
                f"{', ...' if len(trained) > 5 else ''}) and cannot classify others; evaluate it on the classes it was "
                "trained on, or train with --model.init_args.class_specific false for unseen classes."
            )
