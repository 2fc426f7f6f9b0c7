"""The tiny DINO backbone: a small timm ViT whose CLS token is the image feature."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
TOY_DINO_WEIGHTS = WEIGHTS_DIR / "toy-dino.safetensors"


def build_toy_dino() -> torch.nn.Module:
    """ViT, 32 px, patch 4, width 128, 4 layers; any input size (local crops are 16 px); output (B, 128)."""
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=4,
        embed_dim=128,
        depth=4,
        num_heads=4,
        num_classes=0,
        dynamic_img_size=True,
    )


def load_toy_dino(weights: str | Path = TOY_DINO_WEIGHTS) -> torch.nn.Module:
    """The shipped tiny DINO, frozen and in eval mode (fp16 weights loaded into fp32)."""
    model = build_toy_dino()
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    return model.requires_grad_(False).eval()
