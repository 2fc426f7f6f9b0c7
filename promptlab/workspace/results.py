"""Reading what a run left behind, for the app's Train, Inspect, Try it, Export and Runs pages."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from promptlab.methods import registered_methods
from promptlab.methods._contract import Panel, panels_from_json
from promptlab.run_folder import CONFUSION_PNG_FILE, TEST_METRICS_FILE
from promptlab.workspace.run_record import (
    CLASSIFIER_FILE,
    INSPECTION_FILE,
    LIGHTNING_DIR,
    LOG_FILE,
    PREDICTIONS_FILE,
    PROGRESS_FILE,
    SETTINGS_FILE,
    SPLIT_FILE,
    read_json,
)
from promptlab.workspace.runs import run_status


@dataclass
class Curves:
    """Training curves from Lightning's ``metrics.csv``: loss per step, validation accuracy per epoch."""

    loss: list[tuple[int, float]] = field(default_factory=list)  # (step, train/loss)
    val_accuracy: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/acc)


def training_curves(run_dir: Path) -> Curves:
    """The curves so far (the file grows while training; a partly written last line is skipped)."""
    curves = Curves()
    path = run_dir / LIGHTNING_DIR / "metrics.csv"
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    if row.get("train/loss"):
                        curves.loss.append((int(row["step"]), float(row["train/loss"])))
                    if row.get("val/acc"):
                        curves.val_accuracy.append((int(row["epoch"]) + 1, float(row["val/acc"])))
                except (TypeError, ValueError):
                    continue
    except OSError:
        pass
    return curves


def method_label(key: str | None) -> str:
    """The name people read for a method key (the key itself for a method no longer registered)."""
    method = registered_methods().get(key or "")
    return method.label if method else str(key)


def run_epochs(run_dir: Path, method: str | None) -> int | None:
    """The epochs a run was asked for, or None for methods without epochs."""
    cls = registered_methods().get(method or "")
    if cls is None or not cls.trains() or not cls.uses_epochs:
        return None
    return read_json(run_dir / SETTINGS_FILE).get("epochs")


def train_image_count(run_dir: Path, method: str | None) -> int:
    """Labelled images a run learned from (methods that learn from no labels: none)."""
    cls = registered_methods().get(method or "")
    if cls is None or cls.learns_from != "labels":
        return 0
    return len(read_json(run_dir / SPLIT_FILE).get("train", []))


@dataclass
class RunResults:
    """Everything about one run the pages show."""

    run_dir: Path
    record: dict  # run.json, with the status checked
    settings: dict
    metrics: dict  # test_metrics.json ({} without a test)
    predictions: list[dict]  # held-out images: path (relative to data/), true, predicted, probability
    panels: list[Panel]  # what the method shows on the Inspect page
    progress: dict

    @property
    def classifier_file(self) -> Path | None:
        """The run's exported classifier, once it finished."""
        path = self.run_dir / CLASSIFIER_FILE
        return path if path.is_file() else None

    @property
    def confusion_png(self) -> Path | None:
        """The test's confusion matrix picture."""
        path = self.run_dir / LIGHTNING_DIR / CONFUSION_PNG_FILE
        return path if path.is_file() else None

    @property
    def misclassified(self) -> list[dict]:
        """The held-out images the classifier got wrong."""
        return [row for row in self.predictions if row["true"] != row["predicted"]]

    @property
    def train_images(self) -> int:
        """Training images the run used."""
        return train_image_count(self.run_dir, self.record.get("method"))

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` of the worker's log."""
        try:
            return "\n".join((self.run_dir / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def run_results(run_dir: Path) -> RunResults:
    """Everything the Inspect page shows of a run, read from its folder."""
    lightning = run_dir / LIGHTNING_DIR
    return RunResults(
        run_dir=run_dir,
        record=run_status(run_dir),
        settings=read_json(run_dir / SETTINGS_FILE),
        metrics=read_json(lightning / TEST_METRICS_FILE),
        predictions=read_json(run_dir / PREDICTIONS_FILE).get("rows", []),
        panels=panels_from_json(read_json(run_dir / INSPECTION_FILE).get("panels", [])),
        progress=read_json(run_dir / PROGRESS_FILE),
    )
