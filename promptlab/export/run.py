"""A run folder or a checkpoint -> the method it trained -> a classifier file, for its classes or others."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import yaml

from promptlab.deploy.calibration import Calibration
from promptlab.export.method import CLASSIFIER_FILE_NAME, ExportError, export_classifier
from promptlab.methods import CLIPClassifier, method_class
from promptlab.methods._open_set import OpenSetFit, load_open_set
from promptlab.run_folder import DATA_INFO_FILE_NAME, TEST_METRICS_FILE


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest ``checkpoints/*.ckpt`` of a run (CoOp evaluates the last epoch)."""
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise ExportError(f"Run {str(run_dir)!r} has no checkpoints/*.ckpt; train it with `promptlab fit` first.")
    return checkpoints[-1]


RUN_CONFIG_FILE, RUN_HPARAMS_FILE = "config.yaml", "hparams.yaml"  # written by LightningCLI and the CSV logger


def method_of_untrained_run(run_dir: Path, weights_path: str | None = None) -> CLIPClassifier | None:
    """The model of a run whose method learns nothing (a zero-shot ``promptlab test`` run), rebuilt from
    the hyper-parameters it recorded; None for a run of a method that trains.
    """
    config_file, hparams_file = run_dir / RUN_CONFIG_FILE, run_dir / RUN_HPARAMS_FILE
    if not (config_file.is_file() and hparams_file.is_file()):
        return None
    class_path = (yaml.safe_load(config_file.read_text()) or {}).get("model", {}).get("class_path", "")
    try:
        method = method_class(class_path.rpartition(".")[2])
    except KeyError:
        return None
    if method.trains():
        return None
    hparams = (yaml.safe_load(hparams_file.read_text()) or {}) | (
        {"weights_path": weights_path} if weights_path else {}
    )
    # The method's own arguments and those it passes on to the base class (``**kwargs``).
    accepted = {name for cls in method.__mro__ if "__init__" in vars(cls) for name in inspect.signature(cls).parameters}
    return method(**{k: v for k, v in hparams.items() if k in accepted})


def load_method(checkpoint_path: str | Path, weights_path: str | None = None) -> CLIPClassifier:
    """Rebuilds a method from a promptlab checkpoint (trainable tensors + hyper-parameters only), with
    another backbone weights file when given.
    """
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
    hparams |= {"weights_path": weights_path} if weights_path else {}
    model = method(**hparams)
    model.load_state_dict(checkpoint["state_dict"], strict=False)
    return model


def export_run(
    run_dir: str | Path,
    output: str | Path | None = None,
    embed_backbone: bool = False,
    reject_below: float | None = None,
    classes: list[str] | None = None,
    weights_path: str | None = None,
) -> Path:
    """Exports a run folder (a ``promptlab fit`` log directory, or a ``promptlab test`` one of a method
    that learns nothing) with its test metrics, the calibration its test fitted on the validation split,
    and its data version.

    Args:
        run_dir: the run folder.
        output: the file to write (default: ``<run>/classifier.safetensors``), ``.onnx`` for ONNX.
        embed_backbone: store the image tower's weights in the file.
        reject_below: answer "none of these" below this calibrated top probability.
        classes: other class names (added, removed, reordered) for the learned prompts; see
            :meth:`~promptlab.methods._base.CLIPClassifier.with_classes`.
        weights_path: the backbone's weights file, where the run's own cannot be found.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"Run folder {str(run_dir)!r} does not exist; pass a folder under runs/.")
    model = method_of_untrained_run(run_dir, weights_path) or load_method(latest_checkpoint(run_dir), weights_path)
    metrics_file, data_file = run_dir / TEST_METRICS_FILE, run_dir / DATA_INFO_FILE_NAME
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    data_version = json.loads(data_file.read_text()).get("data_version") if data_file.is_file() else None
    calibration = Calibration.from_dict(metrics["calibration"]) if metrics and "calibration" in metrics else None
    open_set = load_open_set(run_dir)
    if classes is not None and list(classes) != model.class_names:
        open_set = open_set_for_classes(open_set, model.class_names, classes)
        model, metrics, calibration = change_classes(model, classes, metrics, calibration)
    output = output or run_dir / CLASSIFIER_FILE_NAME
    return export_classifier(model, output, embed_backbone, metrics, data_version, calibration, reject_below, open_set)


def open_set_for_classes(open_set: OpenSetFit | None, trained: list[str], classes: list[str]) -> OpenSetFit | None:
    """The familiarity rule for a subset of the trained classes (their reference images, relabelled);
    None when a class was added, whose images the reference has never seen and would call unfamiliar.
    """
    if open_set is None or not set(classes) <= set(trained):
        return None
    record, reference, labels = open_set
    new_label = torch.tensor([classes.index(name) if name in classes else -1 for name in trained])
    relabelled = new_label[labels]
    kept = relabelled >= 0
    if int(kept.sum()) < 2:
        return None
    return record, reference[kept], relabelled[kept]


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
