"""An int8 ONNX classifier for CPUs: the image encoder's matrix products quantized by onnxruntime's own
tools, the head and the familiarity reference kept in float32.

``dynamic`` quantizes the weights ahead of time and each activation as it comes (no calibration);
``static`` also fixes the activations' scales from calibration images (QDQ format). Weights get one
scale per output channel: a projection's rows differ in range, and one scale for the whole matrix
rounds the small rows coarsely (measured in the manual's int8 section: the same speed, and fewer
answers changed on the toy test images). What is quantized, how, and the top-1 agreement with the
float32 file measured at export time go into the metadata (``quantization`` in the ``promptlab`` JSON).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from promptlab.errors import UserError

QUANTIZED_OPS = ["MatMul", "Gemm"]  # the transformer's projections: nearly all of a ViT's time on a CPU
BACKBONE_PREFIX = "backbone."  # the exported graph names the encoder's weights after its module path


class _WithoutPreprocessingAdvice(logging.Filter):
    """onnxruntime advises its pre-processing before quantizing; its symbolic shape inference fails on
    the graphs torch.export writes, so the advice is dropped rather than shown on every export.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


class QuantizeError(UserError):
    """A classifier cannot be quantized as asked; the message says why and what to do."""


def nodes_after_the_encoder(model: onnx.ModelProto) -> list[str]:
    """The MatMul and Gemm nodes after the last one reading an encoder weight: the head and the
    familiarity reference, which stay float32 (their few products cost little and set the answer).
    """
    names = {initializer.name for initializer in model.graph.initializer}
    last_encoder = max(
        (
            i
            for i, node in enumerate(model.graph.node)
            if any(x in names and x.startswith(BACKBONE_PREFIX) for x in node.input)
        ),
        default=None,
    )
    if last_encoder is None:
        raise QuantizeError(
            "The ONNX file names no encoder weights (backbone.*), so promptlab cannot tell what to quantize."
        )
    return [n.name for n in model.graph.node[last_encoder + 1 :] if n.op_type in QUANTIZED_OPS]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over preprocessed images, in batches of 16."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._batches: Iterator[dict] = iter({input_name: images[i : i + 16]} for i in range(0, len(images), 16))

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def quantize_onnx(
    fp32: str | Path,
    output: str | Path,
    mode: Literal["dynamic", "static"] = "dynamic",
    calibration: np.ndarray | None = None,
) -> Path:
    """Writes the int8 version of the ONNX classifier ``fp32`` to ``output``.

    Args:
        fp32: a float32 ONNX classifier written by ``promptlab export``.
        output: the int8 file to write.
        mode: ``dynamic`` or ``static``.
        calibration: (N, 3, H, W) float32 preprocessed images fixing the activation scales (``static``).

    Raises:
        QuantizeError: ``static`` without calibration images, or a graph without encoder weights.
    """
    model = onnx.load(str(fp32))
    keep = nodes_after_the_encoder(model)
    output = Path(output)
    advice = _WithoutPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        _quantize(fp32, output, mode, calibration, model.graph.input[0].name, keep)
    finally:
        logging.getLogger().removeFilter(advice)
    return output


def _quantize(
    fp32: str | Path,
    output: Path,
    mode: Literal["dynamic", "static"],
    calibration: np.ndarray | None,
    input_name: str,
    keep: list[str],
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    # How the weights are quantized, the same in both modes.
    weights = {
        "weight_type": QuantType.QInt8,
        "op_types_to_quantize": QUANTIZED_OPS,
        "nodes_to_exclude": keep,
        "per_channel": True,
    }
    if mode == "dynamic":
        quantize_dynamic(str(fp32), str(output), **weights)
    else:
        if calibration is None or not len(calibration):
            raise QuantizeError("Static int8 quantization needs calibration images; pass --quantize_images FOLDER.")
        quantize_static(
            str(fp32),
            str(output),
            _Batches(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            **weights,
        )


def top1_agreement(fp32: str | Path, int8: str | Path, images: np.ndarray) -> float:
    """The share of ``images`` (N, 3, H, W) on which the two files give the same top class."""
    from promptlab.deploy.onnx_runtime import OnnxClassifier

    a, b = OnnxClassifier(fp32), OnnxClassifier(int8)
    same = [
        a.probabilities(images[i : i + 64]).argmax(1) == b.probabilities(images[i : i + 64]).argmax(1)
        for i in range(0, len(images), 64)
    ]
    return float(np.concatenate(same).mean())


def record_quantization(path: str | Path, record: dict) -> None:
    """Adds ``record`` as ``quantization`` to the file's ``promptlab`` metadata."""
    from promptlab.files import atomic_write

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["promptlab"]) | {"quantization": record}
    onnx.helper.set_model_props(model, props | {"promptlab": json.dumps(meta)})
    atomic_write(Path(path), lambda tmp: onnx.save_model(model, str(tmp)))


def quantize_classifier(
    fp32: str | Path,
    output: str | Path,
    mode: Literal["dynamic", "static"],
    images: np.ndarray,
    images_from: str,
    calibration: np.ndarray | None = None,
) -> dict:
    """Quantizes ``fp32`` into ``output``, measures top-1 agreement on ``images`` and records both.

    Args:
        fp32: the float32 ONNX classifier.
        output: the int8 file to write.
        mode: ``dynamic`` or ``static``.
        images: (N, 3, H, W) preprocessed images the agreement is measured on.
        images_from: where those images come from, for the record.
        calibration: preprocessed images fixing the activation scales (``static``).

    Returns:
        The record written into the metadata.
    """
    with tempfile.TemporaryDirectory() as folder:
        quantized = quantize_onnx(fp32, Path(folder) / "int8.onnx", mode, calibration)
        record = {
            "weights": "int8, one scale per output channel",
            "mode": mode,
            "kept_float32": "the head and the familiarity reference",
            "top1_agreement": top1_agreement(fp32, quantized, images),
            "agreement_images": f"{len(images)} {images_from}",
            **({"calibration_images": len(calibration)} if calibration is not None else {}),
        }
        record_quantization(quantized, record)
        Path(output).write_bytes(quantized.read_bytes())
    return record
