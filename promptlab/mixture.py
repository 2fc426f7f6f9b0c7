"""Mixture-of-prompts inference shared by MoCoOp and exported MoCoOp classifiers: route each image to
its top-k experts and mix their class logits."""

from __future__ import annotations

import torch


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, E) router logits -> (B, k) softmax weights over the k best experts and their (B, k) indices."""
    values, indices = router_logits.topk(min(top_k, router_logits.shape[-1]), dim=-1)
    return values.softmax(dim=-1), indices


def mixture_logits(
    image_features: torch.Tensor,
    expert_features: torch.Tensor,
    weights: torch.Tensor,
    indices: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """CLIP logits against each image's weighted mixture of its experts' class features.

    The mixture is the reference's ``einsum("bk,bkcd->bcd")`` of normalised expert features (not
    renormalised), so its logits are the weighted sum of the chosen experts' logits; computing every
    expert's logits at once is cheaper than gathering (B, k, C, D) features.

    Args:
        image_features: (B, D) normalised image features.
        expert_features: (E, C, D) normalised class features of every expert.
        weights: (B, k) mixture weights; indices: (B, k) expert of each weight.
        logit_scale: CLIP's (exponentiated) logit scale.

    Returns:
        (B, C) logits.
    """
    per_expert = torch.einsum("bd,ecd->bec", image_features, expert_features.to(image_features.dtype))  # (B, E, C)
    chosen = per_expert.gather(1, indices.unsqueeze(-1).expand(-1, -1, per_expert.shape[-1]))  # (B, k, C)
    return logit_scale * (weights.unsqueeze(-1).to(chosen.dtype) * chosen).sum(dim=1)
