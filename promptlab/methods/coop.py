"""CoOp: learned context vectors in front of (or around) the class name."""

from __future__ import annotations

import torch
from torch import nn

from promptlab.methods.base import CLIPClassifier
from promptlab.methods.prompts import ClassPosition, build_prompt_layout, coop_segments


class CoOp(CLIPClassifier):
    """Context Optimization (Zhou et al., 2022).

    Args:
        n_ctx: number of context vectors (ignored when ``ctx_init`` is given: its token count is used).
        ctx_init: initialisation phrase (``a photo of a``), or None for random N(0, 0.02) vectors.
        class_specific: one context per class (CSC) instead of one shared by all classes.
        class_position: where the class name goes: ``end``, ``middle`` or ``front``.
        **kwargs: see :class:`CLIPClassifier`.
    """

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
        n_classes = self.token_embeddings.shape[0]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.expand(n_classes, -1, -1)
        rows = torch.arange(n_classes, device=ctx.device).unsqueeze(1).expand_as(self.context_slots)
        return self.token_embeddings.index_put((rows, self.context_slots), ctx.to(self.token_embeddings.dtype))

    def class_features(self) -> torch.Tensor:
        return self.backbone.encode_prompts(self.prompt_embeddings(), self.pool_index, shared_prefix=self.shared_prefix)

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
