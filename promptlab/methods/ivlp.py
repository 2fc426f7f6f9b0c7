"""IVLP: deep prompts in both towers, each tower's its own (MaPLe without the coupling)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from typing_extensions import override

from promptlab.methods._contract import ToyDefaults
from promptlab.methods.maple import MaPLe


class IVLP(MaPLe):
    """Independent Vision-Language Prompting, the baseline of the MaPLe paper, as
    muzairkhattak/multimodal-prompt-learning ``trainers/independentVL.py`` computes it.

    The text side is MaPLe's (``[SOS][ctx] of a {class}. [EOS]`` and learned tokens before blocks 1 to
    J - 1); the image side has its own N(0, 0.02) tokens per block instead of projections of the text's,
    ``n_ctx_vision`` of them, appended after the patch tokens at the input. The reference's config puts
    prompts in all 12 blocks of both towers.

    Args:
        n_ctx_vision: image prompt tokens per block (reference: 2).
        prompt_depth: J, the blocks of each tower that take prompts (reference: 12).
        **kwargs: see :class:`~promptlab.methods.maple.MaPLe`.
    """

    key = "ivlp"
    label = "IVLP"
    about = "Learns prompts inside both of CLIP's encoders, each encoder its own (MaPLe without the link between them)."
    toy = ToyDefaults("ivlp.yaml")

    def __init__(self, n_ctx_vision: int = 2, prompt_depth: int = 12, **kwargs: Any) -> None:
        if n_ctx_vision < 1:
            raise ValueError(f"n_ctx_vision must be at least 1 (got {n_ctx_vision}).")
        self.n_ctx_vision = n_ctx_vision  # read by build_image_prompts, during MaPLe's init
        super().__init__(prompt_depth=prompt_depth, **kwargs)

    @override
    def build_image_prompts(self, text_width: int, image_width: int) -> None:
        """The image side's own tokens, one set per block."""
        tokens = torch.empty(self.prompt_depth, self.n_ctx_vision, image_width).normal_(std=0.02)
        self.visual_prompts = nn.Parameter(tokens)

    @override
    def image_prompt_tokens(self) -> torch.Tensor:
        return self.visual_prompts
