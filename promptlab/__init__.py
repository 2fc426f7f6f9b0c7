"""promptlab: task-specific image classifiers from a frozen CLIP model by prompt learning.

The names users write are importable from here and imported on first use, so ``import promptlab``
stays cheap (a deployment that only loads an ONNX classifier never imports torch)::

    from promptlab import Classifier, OnnxClassifier, registered_methods
"""

from __future__ import annotations

import importlib
from typing import Any

from promptlab import _moved

__version__ = "0.1.0"

_PUBLIC = {
    "Classifier": "promptlab.deploy.classifier",
    "OnnxClassifier": "promptlab.deploy.onnx_runtime",
    "Prediction": "promptlab.deploy.prediction",
    "FrozenCLIP": "promptlab.backbone",
    "CLIPClassifier": "promptlab.methods",
    "method_class": "promptlab.methods",
    "register_method": "promptlab.methods",
    "registered_methods": "promptlab.methods",
    "export_classifier": "promptlab.export",
    "UserError": "promptlab.errors",
}

__all__ = ["__version__", *sorted(_PUBLIC)]

_moved.install()


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'promptlab' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
