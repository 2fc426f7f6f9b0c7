"""Test-time reports of a method: metrics JSON, the confusion matrix as JSON and PNG, MoCoOp's routing."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from promptlab.run_folder import CONFUSION_JSON_FILE, CONFUSION_PNG_FILE, TEST_METRICS_FILE


def save_test_report(
    out_dir: Path,
    class_names: list[str],
    accuracy: float,
    macro_f1: float,
    per_class_accuracy: torch.Tensor,
    confusion: torch.Tensor,
    calibration: dict | None = None,
    open_set: dict | None = None,
) -> dict:
    """Writes test_metrics.json, confusion_matrix.json and confusion_matrix.png into ``out_dir``.

    Args:
        out_dir: the run folder.
        class_names: class names by label.
        accuracy: test accuracy.
        macro_f1: test macro F1.
        per_class_accuracy: (C,) accuracy of each class.
        confusion: (C, C) counts, rows = true class, columns = predicted class.
        calibration: the temperature, where it was fitted and the test ECE before and after it
            (:class:`promptlab.deploy.calibration.Calibration` as a dict).
        open_set: the familiarity threshold of "none of these" and where it was fitted
            (:class:`promptlab.deploy.open_set.OpenSet` as a dict).

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
        **({"open_set": open_set} if open_set is not None else {}),
    }
    (out_dir / TEST_METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    (out_dir / CONFUSION_JSON_FILE).write_text(
        json.dumps({"class_names": class_names, "matrix": confusion.int().tolist()})
    )
    plot_confusion_matrix(confusion, class_names, out_dir / CONFUSION_PNG_FILE)
    return metrics


def plot_confusion_matrix(confusion: torch.Tensor, class_names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix heatmap; class labels shown up to 40 classes."""
    import matplotlib  # imported when a report is drawn: importing it costs a second

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
                        ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (accuracy {float(confusion.trace() / confusion.sum().clamp(min=1)):.1%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_routing(report: dict, path: Path) -> None:
    """MoCoOp's router picks: share per expert overall (bars) and per class (heatmap, up to 60 classes)."""
    import matplotlib  # imported when a report is drawn: importing it costs a second

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
