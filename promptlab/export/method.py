"""Writes a method (trained or zero-shot) as one classifier file, ``.safetensors`` or ``.onnx``."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from promptlab.deploy.calibration import Calibration
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.classifier_file import write_classifier_file
from promptlab.deploy.onnx_export import export_onnx
from promptlab.deploy.prediction import check_reject_below
from promptlab.errors import UserError
from promptlab.methods import CLIPClassifier
from promptlab.methods._open_set import OpenSetFit

log = logging.getLogger(__name__)

CLASSIFIER_FILE_NAME = "classifier.safetensors"
NOT_TESTED = "no test of the run fitted a temperature on its validation split"


class ExportError(UserError):
    """A run cannot be exported; the message names the path and the fix."""


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def export_classifier(
    model: CLIPClassifier,
    path: str | Path,
    embed_backbone: bool = False,
    metrics: dict | None = None,
    data_version: str | None = None,
    calibration: Calibration | None = None,
    reject_below: float | None = None,
    open_set: OpenSetFit | None = None,
) -> Path:
    """Writes ``model`` as a classifier file, ``.safetensors`` or ``.onnx`` by the suffix of ``path``.

    Args:
        model: a trained (or zero-shot) method.
        path: output file: ``.safetensors`` (promptlab's format, :mod:`promptlab.deploy.classifier_file`) or
            ``.onnx`` (one graph for onnxruntime, :mod:`promptlab.deploy.onnx_export`; embeds the image tower).
        embed_backbone: store the image tower's weights in the file for offline use. Always on for
            backbones with random weights, which cannot be rebuilt from a reference.
        metrics: test metrics to record.
        data_version: dataset version (e.g. ``dvc:<md5>``) to record.
        calibration: the temperature of calibrated probabilities (default: the one in ``metrics``,
            which a test fitted on the validation split, else none).
        reject_below: answer "none of these" below this calibrated top probability (default: never).
        open_set: the familiarity rule of "none of these" (reference features and threshold) a test
            fitted (default: the model's own, where it was tested; none otherwise).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".onnx"):
        raise ExportError(f"Output {str(path)!r} must end in .safetensors (promptlab's format) or .onnx (onnxruntime).")
    reject_below = check_reject_below(reject_below, "--reject_below")
    if calibration is None and metrics and "calibration" in metrics:
        calibration = Calibration.from_dict(metrics["calibration"])
    calibration = calibration or Calibration(fitted_on=f"not calibrated: {NOT_TESTED}")
    open_set = open_set or model.open_set
    if suffix == ".onnx":
        return _export_onnx(model, path, metrics, data_version, calibration, reject_below, open_set)
    backbone = model.backbone
    if backbone.weights_file is None and not embed_backbone:
        log.info("Backbone %s has random weights: embedding them in the classifier.", backbone.model_name)
        embed_backbone = True
    if backbone.image_encoder_tuned and not embed_backbone:
        log.info("The method tuned part of the image encoder: embedding it in the classifier.")
        embed_backbone = True
    with torch.no_grad():
        head = model.export_head()
    tensors = head.tensors() | {f"lora.{k}": v for k, v in backbone.image_lora_deltas().items()}
    deep_prompts = backbone.image_deep_prompt_tokens()  # (J, n, width), MaPLe
    if deep_prompts is not None:
        tensors["deep_prompts"] = deep_prompts
        depth, tokens = deep_prompts.shape[:2]
    if embed_backbone:
        tensors |= {f"visual.{k}": v for k, v in backbone.image_encoder_state().items()}
        if head.needs_text_tower:
            tensors |= {f"text.{k}": v for k, v in backbone.text_encoder_state().items()}
    if open_set is not None:
        tensors |= {"open_set.reference": open_set[1], "open_set.labels": open_set[2]}
    lora = backbone.image_lora
    hparams = {k: v for k, v in model.hparams.items() if k != "class_names" and not k.startswith("_")}
    meta = {
        "head": {"kind": head.kind, **head.params()},
        "method": type(model).__name__,
        "hparams": _json_safe(hparams),
        "class_names": model.class_names,
        "preprocess": backbone.preprocess.to_dict(),
        "backbone": {
            "model_name": backbone.model_name,
            "model_cfg": backbone.model_cfg,
            "pretrained": backbone.pretrained,
            "weights_sha256": backbone.weights_sha256(),
            "embed_dim": backbone.embed_dim,
            "embedded": embed_backbone,
            "visual_prompts": backbone.visual_prompt_count,
            "lora": None if lora is None else lora.image_record(),
            "deep_prompts": None if deep_prompts is None else {"depth": depth, "tokens": tokens},
        },
        "metrics": _json_safe(metrics or {}),
        "calibration": calibration.to_dict(),
        "reject_below": reject_below,
        "open_set": None if open_set is None else open_set[0].to_dict(),
        "data_version": data_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return write_classifier_file(path, meta, tensors)


def _export_onnx(
    model: CLIPClassifier,
    path: Path,
    metrics: dict | None,
    data_version: str | None,
    calibration: Calibration,
    reject_below: float | None,
    open_set: OpenSetFit | None,
) -> Path:
    """The ONNX file of exactly the classifier the ``.safetensors`` export would load (image tower embedded)."""
    with tempfile.TemporaryDirectory() as folder:
        file = export_classifier(
            model, Path(folder) / CLASSIFIER_FILE_NAME, True, metrics, data_version, calibration, reject_below, open_set
        )
        return export_onnx(Classifier.load(file, device="cpu"), path)
