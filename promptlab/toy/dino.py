"""The tiny DINO backbone: a ViT shaped like toy-clip's image tower (open_clip VisionTransformer,
32 px, patch 4, width 128, 4 layers, 128-d output), trained by self-distillation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from promptlab.backbone import FrozenCLIP

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
TOY_DINO_WEIGHTS = WEIGHTS_DIR / "toy-dino.safetensors"


def build_toy_dino(warm_start: bool = False) -> Any:
    """The tiny DINO's ViT; ``warm_start`` copies the shipped toy-clip image tower's weights.

    Takes any input size that the patch grid divides (DINO's local crops are 16 px); returns (B, 128).
    """
    visual = FrozenCLIP("toy-clip", pretrained="promptlab" if warm_start else None).image_encoder
    visual.requires_grad_(True)
    _allow_any_input_size(visual)
    return visual.train()


def _allow_any_input_size(visual: Any) -> None:
    """open_clip's ``_embeds`` with the positional embedding interpolated (differentiably) to the patch grid
    of smaller inputs, such as DINO's 16 px local crops.
    """

    def embeds(x: torch.Tensor) -> torch.Tensor:
        x = visual.conv1(x)  # (B, width, side, side)
        side = x.shape[-1]
        x = x.flatten(2).transpose(1, 2)  # (B, side^2, width)
        pos, grid = visual.positional_embedding, visual.grid_size[0]  # (1 + grid^2, width)
        if side != grid:
            patches = pos[1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
            patches = F.interpolate(patches, size=(side, side), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:1], patches.permute(0, 2, 3, 1).reshape(side * side, -1)])
        x = torch.cat([visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1) + pos.to(x.dtype)
        return visual.ln_pre(visual.patch_dropout(x))

    visual._embeds = embeds


def load_toy_dino(weights: str | Path = TOY_DINO_WEIGHTS) -> torch.nn.Module:
    """The shipped tiny DINO, frozen and in eval mode (fp16 weights loaded into fp32)."""
    model = build_toy_dino(warm_start=True)  # every weight is overwritten; this just avoids a random init
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    return model.requires_grad_(False).eval()
