"""MaPLe: deep prompts in both towers, the image tower's projected from the text tower's."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from typing_extensions import override

from promptlab.methods._base import CLIPClassifier
from promptlab.methods._contract import Setting, ToyDefaults
from promptlab.methods._prompts import build_prompt_layout, splice_context


class MaPLe(CLIPClassifier):
    """Multi-modal Prompt Learning (Khattak et al., 2023), as muzairkhattak/multimodal-prompt-learning
    ``trainers/maple.py`` computes it.

    The text prompt is ``[SOS][ctx_1 .. ctx_n] of a {class}. [EOS]``: with ``ctx_init`` "a photo of a"
    and n = 2 the context starts at "a photo" and the rest of the phrase stays fixed text, as the
    reference keeps it. Blocks 1 to J - 1 of the text tower replace the context's positions with their
    own learned tokens; the image tower gets ``proj(ctx)`` appended after its patch tokens and, before
    blocks 1 to J - 1, ``proj_i`` of the text tower's tokens of that block in place of them
    (:mod:`promptlab.backbone.deep_prompts`). Widths come from the backbone, so any open_clip ViT works;
    a ResNet image tower is refused. Nothing can be cached: the image tower changes as the prompts train.
    Once trained every prompt is fixed, so an exported classifier holds the image tower's (J, n, width)
    tokens and a (C, D) head.

    Differences from the reference, each the paper's intent: the widths 512 and 768 are the backbone's
    (the reference hard-codes them, so only ViT-B works there), and training runs in fp32 on the CPU and
    under the Trainer's precision on a GPU (bf16-mixed) instead of fp16 weights.

    Args:
        n_ctx: context tokens per block (reference: 2).
        ctx_init: initialisation phrase; its first ``n_ctx`` tokens start the context and the rest stays
            in the prompt (reference: "a photo of a"); None for random N(0, 0.02) context and no fixed words.
        prompt_depth: J, the blocks of each tower that take prompts (reference: 9; its cross-dataset
            setting 3).
        **kwargs: see :class:`CLIPClassifier` (reference: SGD lr 0.0035, 1 warm-up epoch at 1e-5).
    """

    key = "maple"
    label = "MaPLe"
    about = (
        "Learns prompts inside both of CLIP's encoders (the first 9 layers of each), the image side's derived "
        "from the text side's; the method base-to-new benchmarks compare against."
    )
    settings: ClassVar[tuple[Setting, ...]] = (Setting("lr", "Learning rate", 0.0035, 1e-5, 1.0),)
    toy = ToyDefaults("maple.yaml")
    image_encoder_per_step = True
    epochs_by_shots = dict.fromkeys((1, 2, 4, 8, 16), 5)  # the reference's one config: 5 epochs

    # buffers registered in __init__
    token_embeddings: torch.Tensor
    context_slots: torch.Tensor
    pool_index: torch.Tensor

    def __init__(
        self,
        n_ctx: int = 2,
        ctx_init: str | None = "a photo of a",
        prompt_depth: int = 9,
        lr: float = 0.0035,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        backbone = self.backbone
        text_width, image_width = backbone.text_width, backbone.image_width  # refuses a ResNet image tower
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1 (got {n_ctx}).")
        if ctx_init and n_ctx <= 4:  # the reference's rule: word initialisation up to 4 tokens
            words = ctx_init.replace("_", " ").split()
            init_ids = torch.tensor(backbone.word_ids(" ".join(words[:n_ctx])))[:n_ctx]
            ctx = backbone.embed_tokens(init_ids).detach().clone()  # (n_ctx, width)
            rest = " ".join(words[n_ctx:])
        else:
            ctx, rest = torch.empty(n_ctx, text_width).normal_(std=0.02), ""
        self.ctx = nn.Parameter(ctx.float())
        self.n_ctx, self.prompt_depth = n_ctx, prompt_depth
        deep = [nn.Parameter(torch.empty(n_ctx, text_width).normal_(std=0.02)) for _ in range(prompt_depth - 1)]
        self.compound_prompts_text = nn.ParameterList(deep)
        self.build_image_prompts(text_width, image_width)
        layout = build_prompt_layout(backbone, self.prompt_class_names, [n_ctx, f"{rest} {{}}.".lstrip()])
        self.register_buffer("token_embeddings", backbone.embed_tokens(layout.token_ids).detach(), persistent=False)
        self.register_buffer("context_slots", layout.context_slots, persistent=False)  # (C, n_ctx)
        self.register_buffer("pool_index", layout.pool_index, persistent=False)  # (C,)
        self.shared_prefix = layout.shared_prefix  # [SOS][ctx] of a: the same in every prompt
        backbone.add_deep_prompts(
            prompt_depth, image_tokens=self.image_prompt_tokens, text_tokens=self.text_prompt_tokens
        )

    def build_image_prompts(self, text_width: int, image_width: int) -> None:
        """The image side's parameters: the coupling projections, one per block, text width to image width."""
        self.proj = nn.Linear(text_width, image_width)
        self.compound_prompt_projections = nn.ModuleList(
            nn.Linear(text_width, image_width) for _ in range(self.prompt_depth - 1)
        )

    def text_prompt_tokens(self) -> torch.Tensor:
        """(J, n_ctx, text_width): the input context, then each deeper block's tokens."""
        return torch.stack([self.ctx, *self.compound_prompts_text])

    def image_prompt_tokens(self) -> torch.Tensor:
        """(J, n_ctx, image_width): the text tokens of each block through its own projection."""
        pairs = zip(self.compound_prompt_projections, self.compound_prompts_text, strict=True)
        deeper = [project(prompt) for project, prompt in pairs]
        return torch.stack([self.proj(self.ctx), *deeper])

    @override
    def class_features(self) -> torch.Tensor:
        embeddings = splice_context(self.token_embeddings, self.context_slots, self.ctx)  # (C, L, width)
        return self.backbone.encode_prompts(embeddings, self.pool_index, shared_prefix=self.shared_prefix)

    @property
    @override
    def caches_image_features(self) -> bool:
        return False  # the image tower runs with the prompts being learned

    @override
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images if images.dim() == 2 else self.backbone.encode_image(images)  # gradients reach the prompts
