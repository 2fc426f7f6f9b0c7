"""A run's classifier for other class names, without retraining (the app's Export page).

Methods whose learned prompts are shared by every class (zero-shot, CoOp with a shared context,
MoCoOp) compute the text features of added names with what they learned; the others refuse with
one sentence (:class:`~promptlab.methods._base.ClassChangeError`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from promptlab.deploy.classifier_file import read_classifier_file
from promptlab.export import change_classes, export_classifier, export_run, open_set_for_classes
from promptlab.methods import CLIPClassifier
from promptlab.methods._open_set import load_open_set
from promptlab.workspace.run_record import CHANGED_CLASSIFIER_FILE, CLASSIFIER_FILE, LIGHTNING_DIR, read_json


def export_with_classes(run_dir: Path, class_names: list[str]) -> Path:
    """Writes ``<run>/classifier-other-classes.safetensors`` for ``class_names``; returns its path.

    Raises:
        ClassChangeError: the run's method learned something per class.
        ValueError: bad class names (duplicates, empty...).
    """
    output = run_dir / CHANGED_CLASSIFIER_FILE
    lightning = run_dir / LIGHTNING_DIR
    if any((lightning / "checkpoints").glob("*.ckpt")):
        return export_run(lightning, output, classes=class_names)
    model = _untrained_model(run_dir)  # zero-shot: nothing learned, the config rebuilds it
    metrics = read_json(lightning / "test_metrics.json") or None
    open_set = open_set_for_classes(load_open_set(lightning), model.class_names, class_names)
    model, metrics, _ = change_classes(model, class_names, metrics, None)
    return export_classifier(model, output, metrics=metrics, open_set=open_set)


def _untrained_model(run_dir: Path) -> CLIPClassifier:
    """The run's method, built from its config.yaml with the class names of its classifier file."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    module, _, name = config["class_path"].rpartition(".")
    method = getattr(importlib.import_module(module), name)
    meta, _ = read_classifier_file(run_dir / CLASSIFIER_FILE)
    return method(class_names=meta["class_names"], **config.get("init_args", {}))
