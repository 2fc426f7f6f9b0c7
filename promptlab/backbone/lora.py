"""Low-rank adaptation (LoRA) of the attention projections in open_clip's transformer blocks.

CLIP-LoRA (Zanella and Ben Ayed, 2024) adds ``scaling * B @ A`` to the query, key and value (and
optionally output) projections of chosen blocks, with A (r, width) and B (width, r), B = 0 at the start
(so the untrained model is CLIP), ``scaling = alpha / sqrt(r)`` and dropout on the input of the
low-rank branch only. Here the adapter is a child ``lora`` of each ``nn.MultiheadAttention`` it adapts
(the frozen weights keep their names), whose ``forward`` is replaced by :func:`_adapted_attention`.

The low-rank branch is computed apart from the frozen projection only while dropout is active (in
training); otherwise the delta is added into the weight first (``merged``), one projection as CLIP's.
An exported classifier records the image tower's A and B (small) and :func:`merge_lora_deltas` adds
them into a plain ``nn.MultiheadAttention``: deployment needs no adapter code at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from promptlab.backbone.source import BackboneError

PROJECTIONS = ("q", "k", "v", "o")  # query, key and value (slices of in_proj_weight) and out_proj
TOWERS = ("text", "image")


@dataclass(frozen=True)
class LoRASpec:
    """Which attention projections of which blocks get a rank-``rank`` adapter, and how it is scaled.

    Attributes:
        rank: r, the rank of each delta.
        alpha: the delta is scaled by ``alpha / sqrt(rank)`` (CLIP-LoRA's choice, not LoRA's alpha / r).
        dropout: dropout probability on the input of the low-rank branch, in training.
        towers: ``text``, ``image`` or both.
        blocks: indices of the adapted blocks in each tower; None for every block.
        projections: some of ``q``, ``k``, ``v``, ``o``.
    """

    rank: int = 2
    alpha: float = 1.0
    dropout: float = 0.25
    towers: tuple[str, ...] = TOWERS
    blocks: tuple[int, ...] | None = None
    projections: tuple[str, ...] = ("q", "k", "v")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"The LoRA rank must be 1 or more (got {self.rank}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"The LoRA dropout must be in [0, 1) (got {self.dropout}).")
        for name, given, known in (("towers", self.towers, TOWERS), ("projections", self.projections, PROJECTIONS)):
            unknown = [value for value in given if value not in known]
            if unknown or not given:
                raise ValueError(f"LoRA {name} must be some of {', '.join(known)} (got {', '.join(given) or 'none'}).")

    @property
    def scaling(self) -> float:
        """The factor of ``B @ A``: alpha / sqrt(rank)."""
        return self.alpha / math.sqrt(self.rank)

    def image_record(self) -> dict[str, Any]:
        """What a classifier file records of the image tower's adapters (``backbone.lora``)."""
        record = {**asdict(self), "scaling": self.scaling}
        return {k: v for k, v in record.items() if k not in ("dropout", "towers")}

    @classmethod
    def from_image_record(cls, record: dict[str, Any]) -> LoRASpec:
        """The image tower's adapters as :meth:`image_record` wrote them, to merge at load time.

        Raises:
            KeyError, TypeError, ValueError: an incomplete or invalid record.
        """
        blocks = record["blocks"]
        return cls(
            rank=int(record["rank"]),
            alpha=float(record["alpha"]),
            dropout=0.0,
            towers=("image",),
            blocks=None if blocks is None else tuple(int(i) for i in blocks),
            projections=tuple(record["projections"]),
        )


class AttentionLoRA(nn.Module):
    """The low-rank deltas of one attention layer: ``{p}_A`` (r, width) and ``{p}_B`` (width, r) per projection."""

    def __init__(self, width: int, spec: LoRASpec) -> None:
        super().__init__()
        self.projections = spec.projections
        self.scaling = spec.scaling
        self.dropout = nn.Dropout(spec.dropout)
        for projection in spec.projections:
            a = nn.Parameter(torch.empty(spec.rank, width))
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's default, as the reference's lora_A
            self.register_parameter(f"{projection}_A", a)
            self.register_parameter(f"{projection}_B", nn.Parameter(torch.zeros(width, spec.rank)))

    def delta(self, projection: str) -> torch.Tensor:
        """(width, width) ``scaling * B @ A`` of one projection."""
        return self.scaling * getattr(self, f"{projection}_B") @ getattr(self, f"{projection}_A")

    @property
    def unmerged(self) -> bool:
        """True while dropout is active: the low-rank branch must see its own dropped-out input."""
        return self.training and self.dropout.p > 0

    def branch(self, x: torch.Tensor, projection: str) -> torch.Tensor:
        """(..., width) -> (..., width) ``scaling * dropout(x) A^T B^T``."""
        a, b = getattr(self, f"{projection}_A"), getattr(self, f"{projection}_B")
        return self.scaling * F.linear(F.linear(self.dropout(x), a.to(x.dtype)), b.to(x.dtype))

    def in_projection(self, attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
        """(..., width) -> queries, keys and values side by side (..., 3 width)."""
        width, names = attn.embed_dim, ("q", "k", "v")
        weight, bias = attn.in_proj_weight, attn.in_proj_bias
        if not self.unmerged:
            deltas = [self.delta(n) if n in self.projections else torch.zeros_like(weight[:width]) for n in names]
            return F.linear(x, weight + torch.cat(deltas).to(weight.dtype), bias)
        parts = list(F.linear(x, weight, bias).split(width, dim=-1))
        parts = [p + self.branch(x, n) if n in self.projections else p for p, n in zip(parts, names, strict=True)]
        return torch.cat(parts, dim=-1)

    def out_projection(self, attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
        """(..., width) attention output -> (..., width) through ``out_proj`` and its delta."""
        out = attn.out_proj
        if "o" not in self.projections:
            return out(x)
        if not self.unmerged:
            return F.linear(x, out.weight + self.delta("o").to(out.weight.dtype), out.bias)
        return out(x) + self.branch(x, "o")


def in_projection(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """(..., width) -> (..., 3 width) queries, keys and values of self-attention, adapted where LoRA is installed."""
    lora = getattr(attn, "lora", None)
    if lora is None:
        return F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    return lora.in_projection(attn, x)


def out_projection(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """(..., width) -> (..., width) output projection, adapted where LoRA is installed."""
    lora = getattr(attn, "lora", None)
    return attn.out_proj(x) if lora is None else lora.out_projection(attn, x)


def _adapted_attention(attn: nn.MultiheadAttention):
    """The replacement ``forward`` of an adapted attention layer (batch first, as open_clip calls it)."""

    def forward(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        **unused: Any,
    ) -> tuple[torch.Tensor, None]:
        lora = cast(AttentionLoRA, attn.lora)
        # open_clip's blocks without ln_1_kv (the only ones adapted) pass one tensor as query, key and value
        q, k, v = lora.in_projection(attn, query).chunk(3, dim=-1)
        heads = attn.num_heads
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, T, width / H)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # additive float or boolean mask
        return lora.out_projection(attn, x.transpose(1, 2).flatten(2)), None

    return forward


def tower_blocks(model: nn.Module, tower: str) -> list[ResidualAttentionBlock]:
    """The residual blocks of open_clip's ``text`` or ``image`` transformer that LoRA can adapt.

    Raises:
        BackboneError: the tower is not a transformer of open_clip's plain attention blocks (a ResNet
            image encoder, a Hugging Face text model).
    """
    owner = model.visual if tower == "image" else getattr(model, "text", model)
    transformer = getattr(owner, "transformer", None)
    blocks = list(getattr(transformer, "resblocks", None) or [])
    adaptable = bool(blocks) and all(
        isinstance(block, ResidualAttentionBlock)
        and not hasattr(block, "ln_1_kv")  # cross-attention
        and isinstance(block.attn, nn.MultiheadAttention)
        and block.attn.batch_first
        and block.attn.in_proj_weight is not None
        for block in blocks
    )
    if not adaptable:
        raise BackboneError(
            f"LoRA adapts the attention of transformer blocks, and this backbone's {tower} encoder is a "
            f"{type(owner).__name__} without them; use a ViT backbone (ViT-B-16...) or adapt the other tower only."
        )
    return blocks


def chosen_blocks(
    blocks: list[ResidualAttentionBlock], spec: LoRASpec, tower: str
) -> dict[int, ResidualAttentionBlock]:
    """The blocks ``spec`` adapts in one tower by index, checked against the tower's depth."""
    indices = range(len(blocks)) if spec.blocks is None else spec.blocks
    outside = [i for i in indices if not 0 <= i < len(blocks)]
    if outside:
        raise BackboneError(
            f"LoRA block {outside[0]} is outside the {tower} encoder's {len(blocks)} blocks (0 to {len(blocks) - 1}); "
            "choose blocks within them."
        )
    return {i: blocks[i] for i in indices}


def install_lora(model: nn.Module, spec: LoRASpec) -> list[nn.Parameter]:
    """Adds adapters (trainable, B = 0) to the blocks ``spec`` chooses; returns their parameters.

    Raises:
        BackboneError: a tower without adaptable blocks, or a block index outside the tower.
    """
    chosen = [(tower, chosen_blocks(tower_blocks(model, tower), spec, tower)) for tower in spec.towers]
    parameters = []
    for _, blocks in chosen:
        for block in blocks.values():
            attn = block.attn
            reference = attn.in_proj_weight
            attn.lora = AttentionLoRA(attn.embed_dim, spec).to(device=reference.device)
            attn.forward = _adapted_attention(attn)
            parameters += list(attn.lora.parameters())
    return parameters


def lora_deltas(model: nn.Module, spec: LoRASpec, tower: str) -> dict[str, torch.Tensor]:
    """The A and B of one tower's adapters as ``{block}.{projection}.A`` / ``.B`` (what a classifier file records)."""
    tensors = {}
    for index, block in chosen_blocks(tower_blocks(model, tower), spec, tower).items():
        for projection in spec.projections:
            for factor in ("A", "B"):
                tensors[f"{index}.{projection}.{factor}"] = getattr(block.attn.lora, f"{projection}_{factor}").detach()
    return tensors


@torch.no_grad()
def merge_lora_deltas(model: nn.Module, spec: LoRASpec, tower: str, tensors: dict[str, torch.Tensor]) -> None:
    """Adds ``scaling * B @ A`` from :func:`lora_deltas` tensors into a plain tower's attention weights.

    Raises:
        KeyError: a delta the spec names is missing from ``tensors``.
    """
    for index, block in chosen_blocks(tower_blocks(model, tower), spec, tower).items():
        attn = block.attn
        width = attn.embed_dim
        for projection in spec.projections:
            a, b = tensors[f"{index}.{projection}.A"], tensors[f"{index}.{projection}.B"]
            weight = attn.out_proj.weight if projection == "o" else attn.in_proj_weight
            rows = slice(0, width) if projection == "o" else slice("qkv".index(projection) * width, None)
            rows = slice(rows.start, rows.start + width)
            weight[rows] += (spec.scaling * b.double() @ a.double()).to(weight)
