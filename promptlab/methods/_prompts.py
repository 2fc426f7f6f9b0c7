"""Token layouts of prompts with learnable context slots, built from the frozen tokenizer.

A prompt is described by segments: an ``int`` is that many learnable context slots, a ``str`` is
literal text in which ``{}`` stands for the class name. CoOp's class positions are:

    end     [SOS][ctx x n][CLASS.][EOS]          -> [n, "{}."]
    middle  [SOS][ctx x n/2][CLASS][ctx x n/2][.] -> [n // 2, "{}", n - n // 2, "."]
    front   [SOS][CLASS][ctx x n][.][EOS]         -> ["{}", n, "."]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from promptlab.backbone import BackboneError, FrozenCLIP

Segment = int | str
ClassPosition = Literal["end", "middle", "front"]


def coop_segments(n_ctx: int, position: ClassPosition) -> list[Segment]:
    """The segments of CoOp's class-token positions."""
    if position == "end":
        return [n_ctx, "{}."]
    if position == "middle":
        return [n_ctx // 2, "{}", n_ctx - n_ctx // 2, "."]
    return ["{}", n_ctx, "."]


@dataclass
class PromptLayout:
    """Token ids of every class prompt and where the context vectors go.

    Attributes:
        token_ids: (C, L) ids, truncated to the shortest exact length; context slots hold a placeholder.
        context_slots: (C, n_ctx) position of each context vector in each prompt.
        pool_index: (C,) position of the EOT token (the row that becomes the feature).
        shared_prefix: leading positions whose tokens (or context slots) are the same in every prompt.
    """

    token_ids: torch.Tensor
    context_slots: torch.Tensor
    pool_index: torch.Tensor
    shared_prefix: int


def build_prompt_layout(backbone: FrozenCLIP, class_names: list[str], segments: list[Segment]) -> PromptLayout:
    """Tokenises ``segments`` for every class.

    Adjacent text pieces (also those around an empty context, ``0``) are tokenised together, as the text
    encoder would see the filled text: ``[n, "{}."]`` and ``[n, "{}", 0, "."]`` give exactly the tokens of
    ``"X X ... {name}."``, also for names whose last character merges with the period (``"kite (bird)"``:
    ``")."``). BPE merges never cross a text/context boundary: it is a word boundary.

    Raises:
        BackboneError: a prompt does not fit the text encoder's context length.
    """
    segments = _merge_text(segments)
    tokenizer = backbone.tokenizer
    context_length = backbone.context_length
    placeholder = tokenizer.encode("X")[0]
    n_ctx = sum(s for s in segments if isinstance(s, int))
    rows, slots = [], []
    for name in class_names:
        ids, ctx_positions = [tokenizer.sot_token_id], list[int]()
        for segment in segments:
            if isinstance(segment, int):
                ctx_positions += range(len(ids), len(ids) + segment)
                ids += [placeholder] * segment
            else:
                ids += tokenizer.encode(segment.replace("{}", name))
        ids.append(tokenizer.eot_token_id)
        if len(ids) > context_length:
            most = n_ctx - (len(ids) - context_length)  # the longest context this class name leaves room for
            fix = f"set n_ctx to {most} or less" if most > 0 else "shorten the class name"
            raise BackboneError(
                f"The prompt of class {name!r} needs {len(ids)} tokens with n_ctx={n_ctx}, but the text encoder "
                f"takes at most {context_length}; {fix}."
            )
        rows.append(ids + [0] * (context_length - len(ids)))
        slots.append(ctx_positions)
    token_ids = torch.tensor(rows, dtype=torch.long)
    token_ids = token_ids[:, : backbone.prompt_length(token_ids)]
    same = (token_ids == token_ids[:1]).all(dim=0).long()  # (L,) position holds one token in every prompt
    shared_prefix = int(same.cumprod(0).sum())  # encode_prompts ignores it when it reaches an EOT
    return PromptLayout(token_ids, torch.tensor(slots, dtype=torch.long), backbone.pool_index(token_ids), shared_prefix)


def _merge_text(segments: list[Segment]) -> list[Segment]:
    """Drops empty context segments and joins the text pieces that then touch."""
    merged: list[Segment] = []
    for segment in segments:
        if segment == 0:
            continue
        if isinstance(segment, str) and merged and isinstance(merged[-1], str):
            merged[-1] += segment
        else:
            merged.append(segment)
    return merged


def splice_context(token_embeddings: torch.Tensor, slots: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Prompt embeddings with the learned context vectors in their slots (CoOp, MoCoOp's experts).

    Args:
        token_embeddings: (C, L, width) embeddings of the prompts' fixed tokens.
        slots: (C, n_ctx) position of each context vector in each prompt.
        context: (n_ctx, width) shared by every class, or (C, n_ctx, width) one per class.

    Returns:
        (C, L, width), differentiable in ``context``.
    """
    n_classes = token_embeddings.shape[0]
    context = context if context.dim() == 3 else context.expand(n_classes, -1, -1)
    rows = torch.arange(n_classes, device=context.device).unsqueeze(1).expand_as(slots)
    return token_embeddings.index_put((rows, slots), context.to(token_embeddings.dtype))
