"""The paper-style results table of a benchmark: mean and standard deviation over seeds per method,
dataset and shot count, as Markdown, CSV (``curves.csv``, flat ``summary.json``) and a plot.
"""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path


def summarise(results: list[dict]) -> list[dict]:
    """Mean and std over seeds per (method, task, shots); base-to-new rows also average base and new."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["method"], r["task"], r["shots"]), []).append(r)
    summary = []
    for (m, t, s), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        values = [r["accuracy"] for r in rows]
        entry = {"method": m, "task": t, "shots": s, "mean": statistics.mean(values), "std": statistics.pstdev(values)}
        entry["seeds"] = len(rows)
        for key in ("base", "new", "stage1_accuracy", "stage2_accuracy"):
            if key in rows[0]:
                entry[key] = statistics.mean(r[key] for r in rows)
        summary.append(entry)
    return summary


def _table(title: str, note: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"\n**{title}** ({note})\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _pct(value: float, std: float | None = None) -> str:
    return f"{value * 100:.1f}" + (f" ± {std * 100:.1f}" if std is not None else "")


def markdown(summary: list[dict], shots: list[int]) -> str:
    """One table per task: methods by shots (zero-shot and label-free methods repeat their one value)."""
    tables = []
    for task in dict.fromkeys(r["task"] for r in summary):
        rows = []
        for method in dict.fromkeys(r["method"] for r in summary if r["task"] == task):
            cells = {r["shots"]: r for r in summary if r["task"] == task and r["method"] == method}
            rows.append(
                [method]
                + [
                    _pct(cells[s]["mean"], cells[s]["std"])
                    if s in cells
                    else (_pct(cells[0]["mean"]) if 0 in cells else "")
                    for s in shots
                ]
            )
        header = ["method", *(f"{s} shots" for s in shots)]
        tables.append(_table(task, "test accuracy %, mean ± std over seeds", header, rows))
    return "".join(tables)


def label_free_markdown(summary: list[dict]) -> str:
    """The label-free methods' stages (descriptions, labeller, prompt-tuned CLIP) per task."""
    rows = [r for r in summary if "stage1_accuracy" in r]
    if not rows:
        return ""
    return _table(
        "label-free stages",
        "NoLA on the unlabelled pool; test accuracy %, mean over seeds",
        ["task", "stage 1: descriptions", "stage 2: DINO labeller", "stage 3: prompt-tuned CLIP (± std)"],
        [[r["task"], _pct(r["stage1_accuracy"]), _pct(r["stage2_accuracy"]), _pct(r["mean"], r["std"])] for r in rows],
    )


def base_to_new_markdown(summary: list[dict]) -> str:
    """Base, new and their harmonic mean per task and method."""
    rows = [r for r in summary if "base" in r]
    if not rows:
        return ""
    return _table(
        "base-to-new",
        "train on the base half of the classes; accuracy %, mean over seeds",
        ["task", "method", "shots", "base", "new", "harmonic mean (± std)"],
        [
            [
                r["task"].removesuffix(" base-to-new"),
                r["method"],
                str(r["shots"]),
                _pct(r["base"]),
                _pct(r["new"]),
                _pct(r["mean"], r["std"]),
            ]
            for r in rows
        ],
    )


def write_curves(summary: list[dict], shots: list[int], path: Path) -> None:
    """Wide CSV for ``dvc plots``: one row per shot count, one ``<task>/<method>`` column of mean accuracy.

    Zero-shot methods (trained on nothing) repeat their accuracy on every row: a flat reference line.
    """
    columns = list(dict.fromkeys(f"{r['task']}/{r['method']}" for r in summary))
    rows = [{"shots": s} for s in shots]
    for r in summary:
        for row in rows:
            if r["shots"] in (0, row["shots"]):
                row[f"{r['task']}/{r['method']}"] = round(r["mean"], 4)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["shots", *columns])
        writer.writeheader()
        writer.writerows(rows)


def plot(summary: list[dict], path: Path) -> None:
    """Accuracy against shots per dataset, like the CoOp paper's figure (zero-shot as a dashed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in summary))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for method in dict.fromkeys(r["method"] for r in summary):
            rows = [r for r in summary if r["task"] == task and r["method"] == method]
            if rows and rows[0]["shots"] == 0:  # zero-shot: a star at 0 shots and a dashed line
                ax.axhline(rows[0]["mean"] * 100, ls="--", color="grey", lw=1)
                ax.plot([0], [rows[0]["mean"] * 100], "*", ms=12, label=method)
            elif rows:
                ax.errorbar(
                    [r["shots"] for r in rows],
                    [r["mean"] * 100 for r in rows],
                    yerr=[r["std"] * 100 for r in rows],
                    marker="o",
                    capsize=3,
                    label=method,
                )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks([0, 1, 2, 4, 8, 16], ["0", "1", "2", "4", "8", "16"])
        ax.set(title=task, xlabel="shots per class", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def paper_markdown(summary: list[dict], tasks: list[str]) -> str:
    """The papers' table: per shot count, methods by dataset (in ``tasks``' order) with their average."""
    tables = []
    for shots in sorted({r["shots"] for r in summary if r["shots"]}):
        rows = []
        for method in dict.fromkeys(r["method"] for r in summary):
            cells = {
                r["task"]: r for r in summary if r["method"] == method and r["shots"] in (0, shots) and "base" not in r
            }
            if not cells:
                continue
            means = [cells[t]["mean"] for t in tasks if t in cells]
            average = _pct(statistics.mean(means)) if len(means) == len(tasks) else ""
            rows.append(
                [method, *(_pct(cells[t]["mean"], cells[t]["std"]) if t in cells else "" for t in tasks), average]
            )
        tables.append(
            _table(f"{shots} shots", "test accuracy %, mean ± std over seeds", ["method", *tasks, "average"], rows)
        )
    return "".join(tables)


def runs_markdown(results: list[dict], relative_to: Path) -> str:
    """Every run with links to its config and its log."""
    rows = []
    for r in results:
        run = Path(r["run"])
        link = os.path.relpath(run, relative_to)
        rows.append(
            [
                r["method"],
                r["task"],
                str(r["shots"]),
                str(r["seed"]),
                _pct(r["accuracy"]),
                f"[config]({link}/config.yaml) · [log]({link}/metrics.csv)",
            ]
        )
    return _table("runs", "each run's folder", ["method", "dataset", "shots", "seed", "accuracy", "files"], rows)


def write_report(
    results: list[dict], shots: list[int], out: Path, stem: str, args: dict, link_runs: bool = True
) -> str:
    """Writes ``<stem>.json`` (every run), ``<stem>.md``, ``<stem>.png``, ``<stem>.csv`` (one row per run),
    ``summary.json`` (flat metrics for ``dvc metrics show``) and ``curves.csv`` (for ``dvc plots show``)
    into ``out``; returns the Markdown tables.
    """
    import json

    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    by_shots = [r for r in summary if "base" not in r]
    table = markdown(by_shots, shots) + label_free_markdown(summary) + base_to_new_markdown(summary)
    tasks = list(dict.fromkeys(r["task"] for r in results if "base" not in r))  # the protocol's order
    report = table + paper_markdown(summary, tasks) + (runs_markdown(results, out) if link_runs else "")
    (out / f"{stem}.json").write_text(json.dumps({"args": args, "runs": results, "summary": summary}, indent=2))
    (out / f"{stem}.md").write_text(report)
    plot(by_shots, out / f"{stem}.png")
    flat = {f"{r['task']}/{r['method']}/{r['shots']}shot": round(r["mean"], 4) for r in summary}
    (out / "summary.json").write_text(json.dumps(flat, indent=2))
    write_curves(by_shots, shots, out / "curves.csv")
    columns = ["method", "task", "shots", "seed", "accuracy", "base", "new", "seconds", "run"]
    with (out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    return table
