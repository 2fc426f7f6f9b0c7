"""A classifier as one ONNX graph, runnable without torch (:mod:`promptlab.deploy.onnx_runtime`).

The graph maps a preprocessed image batch ``images`` (N, 3, H, W) float32 to calibrated class
probabilities ``probabilities`` (N, C): the image encoder (visual prompts included), the
normalisation, the head of any kind and ``softmax(logits / temperature)``; and, for a classifier with a
familiarity reference, each image's familiarity ``familiarity`` (N,) (:mod:`promptlab.deploy.open_set`,
the reference features inside the graph). It is exported with
PyTorch's dynamo-based exporter (``torch.export`` + onnxscript) at opset :data:`OPSET`, with a
dynamic batch dimension; the TorchScript exporter cannot translate the fused attention of open_clip's
ViTs in eval mode. Opset 20 ran toy-clip about 10% faster than opset 18 in onnxruntime (its Gelu
is one op), and is read by onnxruntime 1.17 and newer.

The model's metadata (``metadata_props``) holds one key, ``promptlab``: JSON with ``format``
("promptlab-onnx-classifier"), ``format_version`` (1), ``class_names``, ``preprocess`` (size, mean,
std, interpolation), ``calibration`` (temperature, where it was fitted, ECE before and after),
``reject_below``, ``open_set`` (the familiarity threshold and where it was fitted; null without
one), ``head_kind``, ``method``, ``backbone`` (model name, pretrained tag), ``metrics``,
``data_version`` and ``created``, copied from the classifier file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn
from typing_extensions import override

from promptlab.deploy.classifier import Classifier
from promptlab.deploy.prediction import check_reject_below
from promptlab.errors import UserError
from promptlab.files import atomic_write

OPSET = 20  # native Gelu; onnxruntime 1.17 or newer reads it
ONNX_FORMAT = "promptlab-onnx-classifier"
ONNX_FORMAT_VERSION = 1
META_KEYS = ("method", "metrics", "data_version", "created")


class OnnxExportError(UserError):
    """The classifier cannot be written as ONNX; the message says why and what to do."""


class ProbabilityGraph(nn.Module):
    """(N, 3, H, W) preprocessed images -> (N, C) calibrated probabilities and, where the classifier has a
    familiarity reference, (N,) familiarity: what the ONNX file computes.
    """

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.backbone, self.head = classifier.backbone, classifier.head
        self.familiarity = classifier.familiarity
        self.temperature = classifier.temperature

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.head.encode(self.backbone, images)
        probabilities = (self.head(features) / self.temperature).softmax(dim=-1)
        if self.familiarity is None:
            return probabilities
        return probabilities, self.familiarity(features)


def onnx_metadata(classifier: Classifier) -> dict:
    """What the runtime needs besides the graph, from the classifier file's metadata."""
    meta = classifier.meta
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "class_names": classifier.class_names,
        "preprocess": classifier.preprocess.to_dict(),
        "calibration": classifier.calibration.to_dict(),
        "reject_below": classifier.reject_below,
        "open_set": None if classifier.open_set is None else classifier.open_set.to_dict(),
        "head_kind": meta["head"]["kind"],
        "backbone": {k: meta["backbone"][k] for k in ("model_name", "pretrained")},
        **{k: meta.get(k) for k in META_KEYS},
    }


def export_onnx(classifier: Classifier, path: str | Path) -> Path:
    """Writes ``classifier`` (loaded from a classifier file) as one ONNX file; returns its path.

    Raises:
        OnnxExportError: the exporter cannot translate the backbone (the message names it).
    """
    import onnx  # only writing an ONNX file needs it, not importing this module

    path = Path(path)
    graph = ProbabilityGraph(classifier).to("cpu").eval()
    size = classifier.preprocess.size
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's own deprecation and tracing notes
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=["images"],
                output_names=["probabilities"] + (["familiarity"] if classifier.familiarity is not None else []),
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; all mean "this graph cannot be exported"
        raise OnnxExportError(
            f"Cannot export backbone {classifier.meta['backbone']['model_name']!r} to ONNX "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); use the .safetensors classifier instead."
        ) from error
    if program is None:
        raise OnnxExportError(f"The ONNX exporter returned nothing for {classifier.meta['backbone']['model_name']!r}.")
    model = program.model_proto
    onnx.helper.set_model_props(model, {"promptlab": json.dumps(onnx_metadata(classifier))})
    atomic_write(path, lambda tmp: onnx.save_model(model, str(tmp)))
    return path


def classifier_file_to_onnx(
    classifier_file: str | Path, path: str | Path, reject_below: float | None = None, weights_path: str | None = None
) -> Path:
    """The ONNX file of a ``.safetensors`` classifier file (its rejection threshold replaced when given;
    ``weights_path`` for a file exported without its backbone's weights).
    """
    classifier = Classifier.load(classifier_file, weights_path, device="cpu")
    if reject_below is not None:
        classifier.reject_below = check_reject_below(reject_below, "--reject_below")
    return export_onnx(classifier, path)
