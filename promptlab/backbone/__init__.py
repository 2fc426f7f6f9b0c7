"""The frozen CLIP backbone: the only package that imports open_clip.

Where a backbone comes from (an open_clip name and tag, ``local-dir:``, ``hf-hub:``), the check of its
weights, prompt-aware text encoding with a shared prefix, and the changes methods make to the image
encoder and text encoder (visual prompts, LoRA adapters).
"""

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

from promptlab.backbone.frozen_clip import FrozenCLIP, file_sha256, list_backbones
from promptlab.backbone.lora import LoRASpec
from promptlab.backbone.preprocess import PreprocessConfig
from promptlab.backbone.source import BackboneError

__all__ = [
    "IMAGENET_CLASSNAMES",
    "OPENAI_IMAGENET_TEMPLATES",
    "BackboneError",
    "FrozenCLIP",
    "LoRASpec",
    "PreprocessConfig",
    "file_sha256",
    "list_backbones",
]
