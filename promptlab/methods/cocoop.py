"""CoCoOp: CoOp's context shifted for each image by a small network on its feature."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.deploy.heads import ConditionalHead, Head, conditional_logits
from promptlab.methods._contract import Setting, ToyDefaults
from promptlab.methods.coop import CoOp


class CoCoOp(CoOp):
    """Conditional Context Optimization (Zhou et al., 2022), as KaiyangZhou/CoOp ``trainers/cocoop.py`` computes it.

    The prompt of class c for image x is ``[SOS][ctx_1 + pi(x) ... ctx_M + pi(x)][name.][EOS]``, where
    ``pi = linear2(relu(linear1(f)))`` of the normalised image feature f (widths D -> D / 16 -> text width)
    is added to every context vector. The text tower runs over the C prompts of every image; here each
    image's ``[SOS][context]`` is encoded once for all its classes and the prompts end after their
    last EOT (both exact, :meth:`~promptlab.backbone.FrozenCLIP.encode_prefixed_prompts`), where the
    reference encodes C x 77 tokens per image. An exported classifier keeps the context, the meta-net,
    the class names' token embeddings and needs the text tower at inference (head kind ``conditional``).

    Differences from the reference, each the paper's intent: every *token* of ``ctx_init`` is learned
    (CoOp's decision; the reference counts words), and training runs in fp32 on the CPU and under the
    Trainer's precision on a GPU (bf16-mixed) instead of fp16 weights.

    Args:
        n_ctx: context vectors when ``ctx_init`` is None.
        ctx_init: initialisation phrase (reference: "a photo of a").
        **kwargs: see :class:`~promptlab.methods._base.CLIPClassifier` (the context is shared and the class
            name goes at the end, as the reference's).
    """

    key = "cocoop"
    label = "CoCoOp"
    about = (
        "CoOp whose 4 learned context words shift with each image (a small network reads the image first), "
        "meant to carry over better to classes it never saw."
    )
    settings: ClassVar[tuple[Setting, ...]] = (Setting("lr", "Learning rate", 0.002, 1e-5, 1.0),)
    toy = ToyDefaults("cocoop.yaml")
    text_encoder_per_image = True
    epochs_by_shots = dict.fromkeys((1, 2, 4, 8, 16), 10)  # the reference's one config: 10 epochs

    # buffers registered in __init__
    start: torch.Tensor
    class_tokens: torch.Tensor

    def __init__(self, n_ctx: int = 4, ctx_init: str | None = "a photo of a", **kwargs: Any) -> None:
        for fixed in ("class_specific", "class_position"):
            kwargs.pop(fixed, None)
        super().__init__(n_ctx=n_ctx, ctx_init=ctx_init, **kwargs)
        width, dim = self.backbone.text_width, self.backbone.embed_dim
        layers = [("linear1", nn.Linear(dim, dim // 16)), ("relu", nn.ReLU(inplace=True))]
        self.meta_net = nn.Sequential(OrderedDict([*layers, ("linear2", nn.Linear(dim // 16, width))]))
        prefix = 1 + self.n_ctx  # [SOS][context]: the same slots in every prompt (class name at the end)
        self.register_buffer("start", self.token_embeddings[0, :1].clone(), persistent=False)  # (1, width)
        self.register_buffer("class_tokens", self.token_embeddings[:, prefix:].clone(), persistent=False)

    def conditional_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised image features -> (B, C) logits, each image with its own shifted context."""
        return conditional_logits(
            self.backbone,
            image_features,
            self.ctx,
            self.meta_net,
            self.start,
            self.class_tokens,
            self.pool_index,
            self.logit_scale,
        )

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conditional_logits(self.encode_images(images))

    @override
    def training_losses(self, image_features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.conditional_logits(image_features)
        return {"loss": F.cross_entropy(logits, targets), "logits": logits}

    @override
    @torch.no_grad()
    def export_head(self) -> Head:
        linear1, linear2 = cast(nn.Linear, self.meta_net.linear1), cast(nn.Linear, self.meta_net.linear2)
        head = ConditionalHead(
            self.ctx.detach().float(),
            linear1.weight.detach().float(),
            linear1.bias.detach().float(),
            linear2.weight.detach().float(),
            linear2.bias.detach().float(),
            self.start.float(),
            self.class_tokens.float(),
            self.pool_index,
            float(self.logit_scale),
        )
        head.attach(self.backbone)
        return head
