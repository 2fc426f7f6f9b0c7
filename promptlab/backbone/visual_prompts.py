"""Shallow visual prompt tuning (VPT) in open_clip's VisionTransformer: learnable tokens inserted once,
after the positional embedding and ``ln_pre``, between the CLS token and the patch tokens (NoLA).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from promptlab.backbone.source import BackboneError


def install_visual_prompts(visual: Any, prompts: nn.Parameter) -> None:
    """Makes ``visual`` (an open_clip VisionTransformer) run with ``prompts`` (P, width) inserted.

    With zero prompt tokens the tower computes exactly what it did before.

    Raises:
        BackboneError: the image tower is not a ViT that pools its CLS token.
    """
    if not hasattr(visual, "_embeds") or getattr(visual, "pool_type", "tok") != "tok":
        raise BackboneError(
            f"Visual prompts need a ViT image encoder that pools its CLS token; {type(visual).__name__} "
            f"(pool_type {getattr(visual, 'pool_type', None)!r}) is not one. Use a ViT backbone such as ViT-B-32."
        )
    embeds = type(visual)._embeds.__get__(visual)  # the class's own method, even if already installed

    def embeds_with_prompts(x: torch.Tensor) -> torch.Tensor:
        x = embeds(x)  # (B, 1 + N, width): CLS + patches, after positional embedding and ln_pre
        if not visual.visual_prompts_enabled:
            return x
        tokens = prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], tokens, x[:, 1:]], dim=1)

    visual._embeds = embeds_with_prompts
    visual.visual_prompts_enabled = True
    visual.visual_prompts = prompts  # registered as a parameter of the tower: saved with its state


@contextmanager
def visual_prompts_disabled(visual: Any) -> Iterator[None]:
    """Runs the tower as if no prompts were installed (NoLA's stages 1-2 use plain CLIP)."""
    previous = getattr(visual, "visual_prompts_enabled", True)
    visual.visual_prompts_enabled = False
    try:
        yield
    finally:
        visual.visual_prompts_enabled = previous
