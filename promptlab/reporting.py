"""Test-time reports: metrics JSON, confusion matrix as JSON and PNG, and prediction tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from promptlab.prediction import Prediction

TEST_METRICS_FILE = "test_metrics.json"
CONFUSION_JSON_FILE = "confusion_matrix.json"
CONFUSION_PNG_FILE = "confusion_matrix.png"


def save_test_report(
    out_dir: Path,
    class_names: list[str],
    accuracy: float,
    macro_f1: float,
    per_class_accuracy: torch.Tensor,
    confusion: torch.Tensor,
    calibration: dict | None = None,
) -> dict:
    """Writes test_metrics.json, confusion_matrix.json and confusion_matrix.png into ``out_dir``.

    Args:
        confusion: (C, C) counts, rows = true class, columns = predicted class.
        calibration: the temperature, where it was fitted and the test ECE before and after it
            (:class:`promptlab.calibration.Calibration` as a dict).

    Returns:
        The metrics dictionary written to test_metrics.json.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "num_samples": int(confusion.sum()),
        "per_class_accuracy": dict(zip(class_names, per_class_accuracy.tolist(), strict=True)),
        **({"calibration": calibration} if calibration is not None else {}),
    }
    (out_dir / TEST_METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    (out_dir / CONFUSION_JSON_FILE).write_text(
        json.dumps({"class_names": class_names, "matrix": confusion.int().tolist()})
    )
    plot_confusion_matrix(confusion, class_names, out_dir / CONFUSION_PNG_FILE)
    return metrics


def plot_confusion_matrix(confusion: torch.Tensor, class_names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix heatmap; class labels shown up to 40 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    size = min(4 + 0.3 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    count = int(confusion[i, j])
                    if count:
                        color = "white" if rates[i, j] > 0.5 else "black"
                        ax.text(j, i, count, ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (accuracy {float(confusion.trace() / confusion.sum().clamp(min=1)):.1%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_routing(report: dict, path: Path) -> None:
    """MoCoOp's router picks: share per expert overall (bars) and per class (heatmap, up to 60 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experts, per_class = report["experts"], report["per_class"]
    classes = list(per_class)[:60]
    fig, (bars, heat) = plt.subplots(
        1, 2, figsize=(6 + 0.5 * len(experts), 3 + 0.25 * len(classes)), gridspec_kw={"width_ratios": [1, 2]}
    )
    bars.barh(range(len(experts)), report["overall"], color="tab:blue")
    bars.set_yticks(range(len(experts)), experts, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("share of router picks")
    bars.set_title("Experts picked (all test images)")
    image = heat.imshow([per_class[c] for c in classes], cmap="Blues", vmin=0, vmax=1, aspect="auto")
    heat.set_xticks(range(len(experts)), [f"E{i}" for i in range(len(experts))])
    heat.set_yticks(range(len(classes)), classes, fontsize=8)
    heat.set_title("Per true class")
    fig.colorbar(image, ax=heat, fraction=0.046, label="share of picks")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def top_predictions(
    probabilities: torch.Tensor, class_names: list[str], k: int, reject_below: float | None = None
) -> list[Prediction]:
    """(N, C) probabilities -> one :class:`Prediction` per row with its ``k`` most likely classes;
    "none of these" where the best probability is below ``reject_below``."""
    top = probabilities.float().topk(min(k, len(class_names)), dim=-1)
    return [
        Prediction.from_top(values.tolist(), indices.tolist(), class_names, reject_below)
        for values, indices in zip(top.values, top.indices, strict=True)
    ]


class PredictionWriter:
    """Streams prediction rows (path, label, probability, top_k, none_of_these) to a CSV or JSON file
    chosen by its suffix, one row at a time, so memory stays flat for any number of images. The rows
    go to a temporary file that replaces ``path`` on a clean close: a run that fails leaves no half file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.json = self.path.suffix.lower() == ".json"
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._file = self._tmp.open("w", newline="")
        if self.json:
            self._file.write("[")
        else:
            self._csv = csv.writer(self._file)
            self._csv.writerow(["path", "label", "probability", "top_k", "none_of_these"])

    def write(self, path: str, prediction: Prediction) -> None:
        if self.json:
            row = {"path": path, **prediction.to_dict()}
            self._file.write(("," if self.count else "") + "\n  " + json.dumps(row))
        else:
            top_k = ";".join(f"{name}:{prob:.4f}" for name, prob in prediction.top_k)
            self._csv.writerow(
                [path, prediction.label, f"{prediction.probability:.6f}", top_k, prediction.none_of_these]
            )
        self.count += 1

    def close(self, keep: bool = True) -> None:
        """Finishes the file and moves it into place (``keep``), or drops it."""
        if self.json:
            self._file.write("\n]\n")
        self._file.close()
        if keep:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def write_predictions(rows: list[tuple[str, Prediction]], path: Path) -> None:
    """Writes (image path, prediction) rows as CSV or JSON by the file suffix."""
    with PredictionWriter(path) as writer:
        for image_path, prediction in rows:
            writer.write(image_path, prediction)


def run_dir(trainer) -> Path | None:
    """The run folder that reports go to: the logger's folder, on the main process only.

    None without a logger (Lightning would otherwise fall back to the current directory).
    """
    if trainer is None or trainer.logger is None:
        return None
    log_dir = trainer.log_dir  # a broadcast under DDP: every process must ask, or rank 0 waits forever
    if not trainer.is_global_zero or not log_dir:
        return None
    return Path(log_dir)
