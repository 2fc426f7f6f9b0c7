"""Exact text encoding of prompts that share their first tokens, computing those tokens once.

In CoOp's default prompt ``[SOT][ctx x 16][name.][EOT]`` (and in every MoCoOp expert) the first
tokens are the same for every class. The text transformer is causal, so the hidden states of a
shared prefix are the same for every class at every layer: they are computed once, and each
class's remaining tokens attend to the prefix's keys and values. For 100 ImageNet classes and 16
context vectors this encodes about 17 + 100 x 6 tokens instead of 100 x 23 (and 100 x 77 in the
reference), with the same features up to floating-point rounding.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale, ResidualAttentionBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from promptlab.backbone.lora import in_projection, out_projection


def supports_shared_prefix(transformer: nn.Module) -> bool:
    """True when every block is open_clip's plain pre-norm block with ``nn.MultiheadAttention``
    (the blocks this module re-implements); other blocks take the ordinary path.
    """
    blocks = getattr(transformer, "resblocks", None)
    if not blocks or not getattr(transformer, "batch_first", True):
        return False
    return all(
        type(block) is ResidualAttentionBlock
        and isinstance(block.attn, nn.MultiheadAttention)
        and block.attn.in_proj_weight is not None
        and not hasattr(block, "ln_1_kv")
        and all(isinstance(ls, (nn.Identity, LayerScale)) for ls in (block.ls_1, block.ls_2))
        for block in blocks
    )


def _qkv(block: ResidualAttentionBlock, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, T, W) block input -> queries, keys and values, each (B, H, T, W / H)."""
    attn = block.attn
    qkv = in_projection(attn, block.ln_1(x))  # (B, T, 3W), with LoRA's deltas where a method added some
    return tuple(t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))


def _per_suffix(prefix_states: torch.Tensor, n: int) -> torch.Tensor:
    """(G, H, P, d) states of G prefixes -> (N, H, P, d): each prefix repeated for its N / G suffixes."""
    groups = prefix_states.shape[0]
    # A view for G = 1; no branch on G, which is the dynamic batch of an exported graph (CoCoOp).
    return prefix_states.unsqueeze(1).expand(groups, n // groups, *prefix_states.shape[1:]).flatten(0, 1)


def _block(block: ResidualAttentionBlock, prefix: torch.Tensor, suffix: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One residual block on (G, P, W) prefix and (N, S, W) suffix states, N a multiple of G.

    The prefix attends causally to itself; suffix position i attends to its whole prefix (suffixes
    ``g * N / G`` to ``(g + 1) * N / G - 1`` follow prefix g) and to suffix positions <= i: together
    exactly the causal attention over the concatenated sequences.
    """
    n, length = suffix.shape[:2]
    q_p, k_p, v_p = _qkv(block, prefix)
    q_s, k_s, v_s = _qkv(block, suffix)
    out_p = F.scaled_dot_product_attention(q_p, k_p, v_p, is_causal=True)  # (G, H, P, d)
    keys = torch.cat([_per_suffix(k_p, n), k_s], dim=2)  # (N, H, P + S, d)
    values = torch.cat([_per_suffix(v_p, n), v_s], dim=2)
    mask = torch.ones(length, prefix.shape[1] + length, dtype=torch.bool, device=suffix.device)
    mask[:, prefix.shape[1] :] = torch.ones(length, length, dtype=torch.bool, device=suffix.device).tril()
    out_s = F.scaled_dot_product_attention(q_s, keys, values, attn_mask=mask)  # (N, H, S, d)
    prefix = prefix + block.ls_1(out_projection(block.attn, out_p.transpose(1, 2).flatten(2)))
    suffix = suffix + block.ls_1(out_projection(block.attn, out_s.transpose(1, 2).flatten(2)))
    prefix = prefix + block.ls_2(block.mlp(block.ln_2(prefix)))
    suffix = suffix + block.ls_2(block.mlp(block.ln_2(suffix)))
    return prefix, suffix


def encode_with_shared_prefix(
    transformer: nn.Module, prefix: torch.Tensor, suffix: torch.Tensor, grad_checkpointing: bool = False
) -> torch.Tensor:
    """Runs the text transformer on prompts ``cat(prefix[g], suffix[i])``, g = i // (N / G).

    Args:
        transformer: an open_clip text ``Transformer`` for which :func:`supports_shared_prefix` holds.
        prefix: (G, P, W) input states of the first tokens shared by each group of N / G prompts
            (positional embedding added); G = 1 for one prefix shared by all.
        suffix: (N, S, W) input states of each prompt's remaining tokens (positional embedding added).
        grad_checkpointing: recompute each block in the backward pass instead of storing its activations.

    Returns:
        (N, S, W) output states of the suffix tokens.
    """
    for block in cast(nn.ModuleList, transformer.resblocks):
        replace = getattr(block, "replace_prompt_tokens", None)  # deep prompts (MaPLe): in the prefix
        if replace is not None:
            prefix = replace(prefix)
        if grad_checkpointing and torch.is_grad_enabled():
            prefix, suffix = checkpoint(_block, block, prefix, suffix, use_reentrant=False)
        else:
            prefix, suffix = _block(block, prefix, suffix)
    return suffix
