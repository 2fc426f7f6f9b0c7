"""Classifier heads: (B, D) image features -> (B, C) logits, one class per kind. The features are
L2-normalised, except for a head with ``raw_features`` (NoLA's), which takes them as the encoder gives them.
A head with ``needs_text_tower`` (CoCoOp's) runs the backbone's text tower for every image.

The methods compute their logits with these heads, and an exported classifier stores one (see
:mod:`promptlab.deploy.classifier_file`), so exported predictions are the module's. A head is written as its
``kind``, a few numbers (``params``) and tensors named ``head.<name>``; :func:`head_from_file`
dispatches on the recorded kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.errors import UserError


class HeadError(UserError):
    """A head whose recorded kind, numbers or tensor shapes do not fit together."""


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, E) router logits -> (B, k) softmax weights over the k best experts and their (B, k) indices."""
    values, indices = router_logits.topk(min(top_k, router_logits.shape[-1]), dim=-1)
    return values.softmax(dim=-1), indices


def mixture_logits(
    image_features: torch.Tensor,
    expert_features: torch.Tensor,
    weights: torch.Tensor,
    indices: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    """CLIP logits against each image's weighted mixture of its experts' class features (MoCoOp).

    The mixture is the reference's ``einsum("bk,bkcd->bcd")`` of normalised expert features (not
    renormalised), so its logits are the weighted sum of the chosen experts' logits; computing every
    expert's logits at once is cheaper than gathering (B, k, C, D) features.

    Args:
        image_features: (B, D) normalised image features.
        expert_features: (E, C, D) normalised class features of every expert.
        weights: (B, k) mixture weights.
        indices: (B, k) expert of each weight.
        logit_scale: CLIP's (exponentiated) logit scale.

    Returns:
        (B, C) logits.
    """
    per_expert = torch.einsum("bd,ecd->bec", image_features, expert_features.to(image_features.dtype))  # (B, E, C)
    chosen = per_expert.gather(1, indices.unsqueeze(-1).expand(-1, -1, per_expert.shape[-1]))  # (B, k, C)
    return logit_scale * (weights.unsqueeze(-1).to(chosen.dtype) * chosen).sum(dim=1)


def cache_logits(
    image_features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: torch.Tensor | float
) -> torch.Tensor:
    """Tip-Adapter's cache model: exp(-beta (1 - f k)) @ one-hot values.

    Args:
        image_features: (B, D) normalised image features.
        keys: (N, D) cached training features.
        values: (N, C) their one-hot labels.
        beta: sharpness of the affinity.

    Returns:
        (B, C) cache logits (before the ``alpha`` weight).
    """
    affinity = image_features @ keys.to(image_features.dtype).T  # (B, N)
    return torch.exp(-beta * (1 - affinity)) @ values.to(image_features.dtype)


PROMPTS_PER_CALL = 4096  # image-conditioned prompts per text-encoder call: bounds activation memory


def conditional_logits(
    backbone: Any,
    image_features: torch.Tensor,
    context: torch.Tensor,
    meta_net: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    class_tokens: torch.Tensor,
    pool_index: torch.Tensor,
    scale: torch.Tensor | float,
) -> torch.Tensor:
    """CoCoOp's logits: each image shifts the shared context by ``meta_net`` of its feature, and its C
    prompts ``[start][context + shift][class tokens]`` go through the text tower (each image's prefix once).

    Args:
        backbone: a :class:`promptlab.backbone.FrozenCLIP`, whose text tower encodes the prompts.
        image_features: (B, D) normalised image features.
        context: (n_ctx, width) the learned context.
        meta_net: (B, D) -> (B, width) the shift of every context vector.
        start: (1, width) the start-of-text token's embedding.
        class_tokens: (C, S, width) embeddings of each prompt's tokens after the context, truncated after
            the last EOT.
        pool_index: (C,) EOT position of each prompt.
        scale: CLIP's (exponentiated) logit scale.

    Returns:
        (B, C) logits.
    """
    shift = meta_net(image_features)  # (B, width)
    contexts = context.to(shift.dtype).unsqueeze(0) + shift.unsqueeze(1)  # (B, n_ctx, width)
    # .shape, not len(): len() fixes the batch of an exported graph, whose batch is dynamic.
    starts = start.to(shift.dtype).expand(shift.shape[0], 1, -1)  # (B, 1, width)
    prefixes = torch.cat([starts, contexts], dim=1)  # (B, 1 + n_ctx, width)
    per_call = max(PROMPTS_PER_CALL // class_tokens.shape[0], 1)
    if torch.compiler.is_exporting() or prefixes.shape[0] <= per_call:  # an exported graph runs one call
        chunks = [prefixes]
    else:
        chunks = list(prefixes.split(per_call))
    text = torch.cat([backbone.encode_prefixed_prompts(chunk, class_tokens, pool_index) for chunk in chunks])
    return scale * torch.einsum("bd,bcd->bc", image_features, text.to(image_features.dtype))


class Head(nn.Module):
    """Base of the head kinds. Subclasses set ``kind`` and implement ``forward`` and :meth:`params`."""

    kind: ClassVar[str] = ""
    tensor_names: ClassVar[tuple[str, ...]] = ()
    optional_tensors: ClassVar[tuple[str, ...]] = ()
    class_tensor: ClassVar[str] = "weight"  # the (..., C, D) tensor that gives the head's shape
    raw_features: bool = False  # True: the head takes unnormalised image features
    needs_text_tower: ClassVar[bool] = False  # True: the logits run the text tower (attach the backbone)

    def params(self) -> dict[str, Any]:
        """The numbers (not tensors) stored with the head."""
        return {}

    def attach(self, backbone: Any) -> None:
        """Gives a head that runs the text tower (``needs_text_tower``) the backbone; the others ignore it."""

    def encode(self, backbone: Any, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) float features as this head takes them (normalised
        unless ``raw_features``), from ``backbone`` (a :class:`promptlab.backbone.FrozenCLIP`).
        """
        return backbone.encode_image(images, normalize=not self.raw_features).float()

    @property
    def num_classes(self) -> int:
        """C, the classes the head scores."""
        return getattr(self, self.class_tensor).shape[-2]

    @property
    def feature_dim(self) -> int:
        """D, the width of the image features it takes."""
        return getattr(self, self.class_tensor).shape[-1]

    def tensors(self) -> dict[str, torch.Tensor]:
        """``head.<name>`` -> tensor, float32 on the CPU."""
        names = self.tensor_names + tuple(n for n in self.optional_tensors if getattr(self, n) is not None)
        return {f"head.{n}": getattr(self, n).detach().float().cpu().contiguous() for n in names}


class LinearHead(Head):
    """``logits = scale * f @ weight.T + bias``: zero-shot and CoOp (scale = CLIP's logit scale, no
    bias), the linear probe (scale 1, with a bias) and NoLA (scale 1, unnormalised ``f``: ``raw_features``).
    """

    kind = "linear"
    tensor_names = ("weight",)
    optional_tensors = ("bias",)

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, weight: torch.Tensor, scale: float, bias: torch.Tensor | None = None, raw_features: bool = False
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # (C, D)
        self.register_buffer("bias", bias)  # (C,) or None
        self.scale = float(scale)
        self.raw_features = bool(raw_features)

    @override
    def params(self) -> dict[str, Any]:
        return {"scale": self.scale} | ({"raw_features": True} if self.raw_features else {})

    @override
    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        logits = self.scale * image_features @ self.weight.to(image_features.dtype).T
        return logits if self.bias is None else logits + self.bias.to(logits.dtype)


class MixtureHead(Head):
    """MoCoOp: a linear router picks the ``top_k`` experts of each image; their logits are mixed."""

    kind = "mixture"
    tensor_names = ("experts", "router_weight", "router_bias")
    class_tensor = "experts"

    experts: torch.Tensor
    router_weight: torch.Tensor
    router_bias: torch.Tensor

    def __init__(
        self,
        experts: torch.Tensor,
        router_weight: torch.Tensor,
        router_bias: torch.Tensor,
        top_k: int,
        scale: float,
    ) -> None:
        super().__init__()
        self.register_buffer("experts", experts)  # (E, C, D)
        self.register_buffer("router_weight", router_weight)  # (E, D)
        self.register_buffer("router_bias", router_bias)  # (E,)
        self.top_k, self.scale = int(top_k), float(scale)
        if router_weight.shape[0] != experts.shape[0]:
            raise HeadError(f"The router chooses among {router_weight.shape[0]} experts, the head has {len(experts)}.")

    @override
    def params(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "scale": self.scale}

    @override
    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        router_logits = image_features @ self.router_weight.to(image_features.dtype).T + self.router_bias
        weights, indices = route(router_logits, self.top_k)
        return mixture_logits(image_features, self.experts, weights, indices, self.scale)


class CacheHead(Head):
    """Tip-Adapter: CLIP's zero-shot logits plus ``alpha`` times the cache model's
    (:func:`cache_logits` over the few-shot training features).
    """

    kind = "cache"
    tensor_names = ("weight", "keys", "values")

    weight: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor

    def __init__(
        self, weight: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, alpha: float, beta: float, scale: float
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # (C, D) zero-shot class features
        self.register_buffer("keys", keys)  # (N, D)
        self.register_buffer("values", values)  # (N, C) one-hot labels
        self.alpha, self.beta, self.scale = float(alpha), float(beta), float(scale)
        if keys.shape[0] != values.shape[0] or values.shape[1] != weight.shape[0]:
            raise HeadError(f"Cache keys {tuple(keys.shape)} and values {tuple(values.shape)} do not fit together.")

    @override
    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "scale": self.scale}

    @override
    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        clip = self.scale * image_features @ self.weight.to(image_features.dtype).T
        return clip + self.alpha * cache_logits(image_features, self.keys, self.values, self.beta)


class ConditionalHead(Head):
    """CoCoOp: the text tower runs at inference over prompts whose context each image shifts
    (:func:`conditional_logits`); call :meth:`attach` with the backbone before use.
    """

    kind = "conditional"
    tensor_names = (
        "context",
        "meta_weight1",
        "meta_bias1",
        "meta_weight2",
        "meta_bias2",
        "start",
        "class_tokens",
        "pool_index",
    )
    class_tensor = "class_tokens"
    needs_text_tower = True

    context: torch.Tensor
    meta_weight1: torch.Tensor
    meta_bias1: torch.Tensor
    meta_weight2: torch.Tensor
    meta_bias2: torch.Tensor
    start: torch.Tensor
    class_tokens: torch.Tensor
    pool_index: torch.Tensor

    def __init__(
        self,
        context: torch.Tensor,
        meta_weight1: torch.Tensor,
        meta_bias1: torch.Tensor,
        meta_weight2: torch.Tensor,
        meta_bias2: torch.Tensor,
        start: torch.Tensor,
        class_tokens: torch.Tensor,
        pool_index: torch.Tensor,
        scale: float,
    ) -> None:
        super().__init__()
        self.register_buffer("context", context)  # (n_ctx, width)
        self.register_buffer("meta_weight1", meta_weight1)  # (D / 16, D)
        self.register_buffer("meta_bias1", meta_bias1)
        self.register_buffer("meta_weight2", meta_weight2)  # (width, D / 16)
        self.register_buffer("meta_bias2", meta_bias2)
        self.register_buffer("start", start)  # (1, width)
        self.register_buffer("class_tokens", class_tokens)  # (C, S, width)
        self.register_buffer("pool_index", pool_index.long())  # (C,), stored as float in a file
        self.scale = float(scale)
        self._backbone: Any = None
        fits = (
            meta_weight2.shape[0] == context.shape[-1] == start.shape[-1] == class_tokens.shape[-1]
            and meta_weight1.shape[0] == meta_weight2.shape[1]
            and len(pool_index) == len(class_tokens)
        )
        if not fits:
            raise HeadError(
                f"The conditional head's context {tuple(context.shape)}, meta-net {tuple(meta_weight1.shape)} and "
                f"{tuple(meta_weight2.shape)}, and class tokens {tuple(class_tokens.shape)} do not fit together."
            )

    @override
    def attach(self, backbone: Any) -> None:
        """Uses ``backbone``'s text tower for the prompts (not registered: it is not part of the head)."""
        object.__setattr__(self, "_backbone", backbone)

    @property
    @override
    def num_classes(self) -> int:
        return self.class_tokens.shape[0]

    @property
    @override
    def feature_dim(self) -> int:
        return self.meta_weight1.shape[1]

    @override
    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def meta_net(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, width): Linear, ReLU, Linear."""
        hidden = F.relu(F.linear(image_features, self.meta_weight1, self.meta_bias1))
        return F.linear(hidden, self.meta_weight2, self.meta_bias2)

    @override
    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        if self._backbone is None:
            raise HeadError("The conditional head needs the text tower: attach the backbone first.")
        return conditional_logits(
            self._backbone,
            image_features,
            self.context,
            self.meta_net,
            self.start,
            self.class_tokens,
            self.pool_index,
            self.scale,
        )


HEADS: dict[str, type[Head]] = {cls.kind: cls for cls in (LinearHead, MixtureHead, CacheHead, ConditionalHead)}


def head_from_file(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Head:
    """Rebuilds the head recorded as ``spec`` (``{"kind": ..., **params}``) from ``head.*`` tensors.

    Raises:
        HeadError: unknown kind, missing tensors or numbers, or shapes that do not fit.
    """
    kind = spec.get("kind")
    if kind not in HEADS:
        raise HeadError(f"Unknown head kind {kind!r}; this promptlab reads {', '.join(HEADS)} (upgrade promptlab?).")
    cls = HEADS[kind]
    try:
        arrays: dict[str, torch.Tensor | None] = {n: tensors[f"head.{n}"] for n in cls.tensor_names}
        arrays |= {n: tensors.get(f"head.{n}") for n in cls.optional_tensors}
        return cls(**arrays, **{k: v for k, v in spec.items() if k != "kind"})
    except (KeyError, TypeError) as error:
        raise HeadError(f"The {kind} head is incomplete ({error}).") from error
