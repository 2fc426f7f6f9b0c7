"""Prompt-learning methods, each a LightningModule over the shared frozen backbone."""

from promptlab.methods.base import CLIPClassifier
from promptlab.methods.coop import CoOp
from promptlab.methods.mocoop import MoCoOp
from promptlab.methods.nola import NoLA
from promptlab.methods.zeroshot import ZeroShotCLIP

# Explicit registry (no import side effects): checkpoint "promptlab_method" -> class.
METHODS: dict[str, type[CLIPClassifier]] = {cls.__name__: cls for cls in (ZeroShotCLIP, CoOp, MoCoOp, NoLA)}

__all__ = ["METHODS", "CLIPClassifier", "CoOp", "MoCoOp", "NoLA", "ZeroShotCLIP"]
