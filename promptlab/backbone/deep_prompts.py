"""Deep prompts (MaPLe): learned tokens that enter the first J blocks of a tower, replacing the previous
block's outputs at their positions.

In the image tower (an open_clip ViT pooling its CLS token) the layer-0 tokens are appended after the
patch tokens, with no positional embedding and through ``ln_pre`` (a per-token norm, so appending after
it is the same as before); before blocks 1 to J - 1 the last n tokens are replaced. In the text tower the
layer-0 tokens are part of the prompt's embeddings (the caller puts them after the start token); before
blocks 1 to J - 1 the n tokens after the start token are replaced. Blocks J and later carry them through.

A *provider* gives the (J, n, width) tokens (row 0 the input tokens); it is called once per encoding,
so a method computes them from its parameters (MaPLe's projections) with gradients, and an exported
classifier gives fixed ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from promptlab.backbone.source import BackboneError

Provider = Callable[[], torch.Tensor]  # () -> (J, n, width)
Side = Literal["start", "end"]  # where a tower's prompt tokens sit: after the start token, or last


def _replace(owner: Any, layer: int, x: torch.Tensor) -> torch.Tensor:
    """(B, L, width) block input -> the same with the prompt positions holding layer ``layer``'s tokens."""
    tokens = owner.deep_prompt_tokens_now
    if tokens is None or layer >= tokens.shape[0]:
        return x
    prompt = tokens[layer].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, n, width)
    n = prompt.shape[1]
    if owner.deep_prompt_side == "end":
        return torch.cat([x[:, :-n], prompt], dim=1)
    return torch.cat([x[:, :1], prompt, x[:, 1 + n :]], dim=1)


def _pre_hook(block: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return (block.replace_prompt_tokens(args[0]), *args[1:]), kwargs


def begin_deep_prompts(owner: Any) -> torch.Tensor | None:
    """Asks ``owner``'s provider for this encoding's tokens (None without deep prompts); the blocks' hooks read them."""
    provider = getattr(owner, "deep_prompt_provider", None)
    tokens = None if provider is None else provider()
    # Not nn.Module's setattr: a provider may return a Parameter, which would become one of the tower's.
    object.__setattr__(owner, "deep_prompt_tokens_now", tokens)
    return tokens


def install_deep_prompts(owner: Any, blocks: list[Any], depth: int, side: Side, provider: Provider) -> None:
    """Makes blocks 1 to ``depth - 1`` of ``owner``'s transformer take their prompt tokens from ``provider``.

    Installing again (a method rebuilt for other classes) replaces the provider.

    Raises:
        BackboneError: ``depth`` is not between 1 and the number of blocks.
    """
    if not 1 <= depth <= len(blocks):
        raise BackboneError(f"Prompt depth {depth} must be between 1 and the tower's {len(blocks)} blocks.")
    owner.deep_prompt_provider = provider
    owner.deep_prompt_side = side
    owner.deep_prompt_depth = depth
    owner.deep_prompt_tokens_now = None
    for layer in range(1, depth):
        block = blocks[layer]
        block.replace_prompt_tokens = lambda x, layer=layer: _replace(owner, layer, x)
        if not getattr(block, "deep_prompt_hooked", False):
            block.register_forward_pre_hook(_pre_hook, with_kwargs=True)
            block.deep_prompt_hooked = True


def install_image_deep_prompts(visual: Any, depth: int, provider: Provider) -> None:
    """Deep prompts in an open_clip ViT: layer-0 tokens appended after the patches, the rest replaced.

    Raises:
        BackboneError: the image tower is not a ViT that pools its CLS token, or ``depth`` is too large.
    """
    if not hasattr(visual, "_embeds") or getattr(visual, "pool_type", "tok") != "tok":
        raise BackboneError(
            f"Deep prompts need a ViT image encoder that pools its CLS token; {type(visual).__name__} "
            f"(pool_type {getattr(visual, 'pool_type', None)!r}) is not one. Use a ViT backbone such as ViT-B-16."
        )
    install_deep_prompts(visual, list(visual.transformer.resblocks), depth, "end", provider)
    embeds = type(visual)._embeds.__get__(visual)  # the class's own method, even if already installed

    def embeds_with_prompts(x: torch.Tensor) -> torch.Tensor:
        x = embeds(x)  # (B, 1 + N, width): CLS + patches, after positional embedding and ln_pre
        tokens = begin_deep_prompts(visual)
        if tokens is None:
            return x
        first = visual.ln_pre(tokens[0].to(x.dtype)).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, n, width)
        return torch.cat([x, first], dim=1)

    visual._embeds = embeds_with_prompts
