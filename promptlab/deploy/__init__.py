"""Deployment: the classifier file, loading and predicting, batched classification, calibration,
ONNX export and runtime, and the server.

Nothing here imports Lightning, torchmetrics or :mod:`promptlab.methods`, so a deployment loads an
exported classifier with torch and open_clip alone (and :mod:`promptlab.deploy.onnx_runtime` with
onnxruntime, numpy and pillow alone). Names are imported on first use, so that
``from promptlab.deploy import OnnxClassifier`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Classifier": "promptlab.deploy.classifier",
    "Prediction": "promptlab.deploy.prediction",
    "NONE_OF_THESE": "promptlab.deploy.prediction",
    "OnnxClassifier": "promptlab.deploy.onnx_runtime",
    "ClassifierFileError": "promptlab.deploy.classifier_file",
    "read_classifier_file": "promptlab.deploy.classifier_file",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'promptlab.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
