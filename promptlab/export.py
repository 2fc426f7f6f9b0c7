"""Turns a trained run (or an untrained zero-shot model) into one classifier file."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from promptlab.calibration import Calibration
from promptlab.classifier_file import write_classifier_file
from promptlab.data.datamodule import DATA_INFO_FILE_NAME
from promptlab.errors import UserError
from promptlab.methods import CLIPClassifier, method_class
from promptlab.prediction import check_reject_below
from promptlab.reporting import TEST_METRICS_FILE

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
) -> Path:
    """Writes ``model`` as a classifier file, ``.safetensors`` or ``.onnx`` by the suffix of ``path``.

    Args:
        model: a trained (or zero-shot) method.
        path: output file: ``.safetensors`` (promptlab's format, :mod:`promptlab.classifier_file`) or
            ``.onnx`` (one graph for onnxruntime, :mod:`promptlab.onnx_export`; embeds the image tower).
        embed_backbone: store the image tower's weights in the file for offline use. Always on for
            backbones with random weights, which cannot be rebuilt from a reference.
        metrics: test metrics to record.
        data_version: dataset version (e.g. ``dvc:<md5>``) to record.
        calibration: the temperature of calibrated probabilities (default: the one in ``metrics``,
            which a test fitted on the validation split, else none).
        reject_below: answer "none of these" below this calibrated top probability (default: never).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".onnx"):
        raise ExportError(f"Output {str(path)!r} must end in .safetensors (promptlab's format) or .onnx (onnxruntime).")
    reject_below = check_reject_below(reject_below, "--reject_below")
    if calibration is None and metrics and "calibration" in metrics:
        calibration = Calibration.from_dict(metrics["calibration"])
    calibration = calibration or Calibration(fitted_on=f"not calibrated: {NOT_TESTED}")
    if suffix == ".onnx":
        return _export_onnx(model, path, metrics, data_version, calibration, reject_below)
    backbone = model.backbone
    if backbone.weights_file is None and not embed_backbone:
        log.info("Backbone %s has random weights: embedding them in the classifier.", backbone.model_name)
        embed_backbone = True
    if backbone.tuned_parameters() and not embed_backbone:
        log.info("The method tuned part of the image encoder: embedding it in the classifier.")
        embed_backbone = True
    with torch.no_grad():
        head = model.export_head()
    tensors = head.tensors()
    if embed_backbone:
        tensors |= {f"visual.{k}": v for k, v in backbone.model.visual.state_dict().items()}
    prompts = getattr(backbone.model.visual, "visual_prompts", None)
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
            "visual_prompts": 0 if prompts is None else int(prompts.shape[0]),
        },
        "metrics": _json_safe(metrics or {}),
        "calibration": calibration.to_dict(),
        "reject_below": reject_below,
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
) -> Path:
    """The ONNX file of exactly the classifier the ``.safetensors`` export would load (image tower embedded)."""
    from promptlab.classifier import Classifier
    from promptlab.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as folder:
        file = export_classifier(
            model, Path(folder) / CLASSIFIER_FILE_NAME, True, metrics, data_version, calibration, reject_below
        )
        return export_onnx(Classifier.load(file, device="cpu"), path)


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest ``checkpoints/*.ckpt`` of a run (CoOp evaluates the last epoch)."""
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise ExportError(f"Run {str(run_dir)!r} has no checkpoints/*.ckpt; train it with `promptlab fit` first.")
    return checkpoints[-1]


def load_method(checkpoint_path: str | Path) -> CLIPClassifier:
    """Rebuilds a method from a promptlab checkpoint (trainable tensors + hyper-parameters only)."""
    checkpoint_path = Path(checkpoint_path)
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        method = method_class(checkpoint["promptlab_method"])
    except (OSError, RuntimeError, KeyError, EOFError) as error:
        raise ExportError(
            f"{str(checkpoint_path)!r} is not a readable promptlab checkpoint ({error}); "
            "pass a run's checkpoints/*.ckpt."
        ) from error
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    model = method(**hparams)
    model.load_state_dict(checkpoint["state_dict"], strict=False)
    return model


def export_run(
    run_dir: str | Path,
    output: str | Path | None = None,
    embed_backbone: bool = False,
    reject_below: float | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Exports a run folder (a ``promptlab fit`` log directory) with its test metrics, the calibration
    its test fitted on the validation split, and its data version.

    Args:
        classes: other class names (added, removed, reordered) for the learned prompts; see
            :meth:`~promptlab.methods.base.CLIPClassifier.with_classes`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"Run folder {str(run_dir)!r} does not exist; pass a folder under runs/.")
    model = load_method(latest_checkpoint(run_dir))
    metrics_file, data_file = run_dir / TEST_METRICS_FILE, run_dir / DATA_INFO_FILE_NAME
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    data_version = json.loads(data_file.read_text()).get("data_version") if data_file.is_file() else None
    calibration = Calibration.from_dict(metrics["calibration"]) if metrics and "calibration" in metrics else None
    if classes is not None and list(classes) != model.class_names:
        model, metrics, calibration = change_classes(model, classes, metrics, calibration)
    output = output or run_dir / CLASSIFIER_FILE_NAME
    return export_classifier(model, output, embed_backbone, metrics, data_version, calibration, reject_below)


def change_classes(
    model: CLIPClassifier, classes: list[str], metrics: dict | None, calibration: Calibration | None
) -> tuple[CLIPClassifier, dict, Calibration | None]:
    """The model for other classes, with metrics and calibration that say what they were measured on."""
    trained = model.class_names
    model = model.with_classes(classes)
    note = (
        f"classes were added or removed after training, without retraining; the test metrics below are of "
        f"the {len(trained)} classes it was trained on ({', '.join(trained[:8])}{', ...' if len(trained) > 8 else ''})"
    )
    metrics = {"classes_changed": note, "trained_classes": trained, "trained_metrics": metrics or {}}
    if calibration is not None and calibration.temperature != 1.0:
        calibration = Calibration.from_dict(
            {**calibration.to_dict(), "fitted_on": f"{calibration.fitted_on} (on the {len(trained)} trained classes)"}
        )
    return model, metrics, calibration
