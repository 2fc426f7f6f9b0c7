"""Accuracy on the offline toy world: every method, shots 1-16, seeds 1-3, through the promptlab CLI.

Writes ``<out>/accuracy.json`` (every run), ``accuracy.md`` (mean and std over seeds),
``accuracy.png`` (accuracy against shots, like the CoOp paper's figure) and ``summary.json`` (flat
metrics for ``dvc metrics show``) plus ``curves.csv`` (for ``dvc plots show``).

    python benchmarks/accuracy.py            # the full grid (3 tasks x 5 shots x 3 seeds)
    python benchmarks/accuracy.py --quick    # one task, 2 shot counts, 1 seed, few epochs (CI)
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

# Methods register here: name -> (config, subcommand). Zero-shot methods use no shots.
METHODS = {
    "zero-shot": ("configs/toy/zeroshot.yaml", "test"),
    "CoOp": ("configs/toy/coop.yaml", "fit"),
}
REFERENCE_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}  # CoOp's epochs by shots


def run_once(method: str, task: str, shots: int, seed: int, data_root: str, out: Path, epochs: int | None) -> dict:
    from promptlab.cli import lightning_cli
    from promptlab.reporting import TEST_METRICS_FILE

    config, subcommand = METHODS[method]
    name = f"{method}_{task}_{shots}shot_seed{seed}".replace(" ", "")
    args = [
        subcommand,
        "-c",
        config,
        f"--data.dataset=toy_{task}",
        f"--data.root={data_root}",
        f"--data.seed={seed}",
        f"--trainer.logger.init_args.save_dir={out / 'runs'}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if subcommand == "fit":
        args += [
            f"--data.shots={shots}",
            f"--trainer.max_epochs={epochs or REFERENCE_EPOCHS[shots]}",
            "--trainer.check_val_every_n_epoch=100000",
        ]
    start = time.time()
    lightning_cli(args)
    run = max((out / "runs" / name).glob("version_*"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads((run / TEST_METRICS_FILE).read_text())
    return {
        "method": method,
        "task": task,
        "shots": shots,
        "seed": seed,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "seconds": time.time() - start,
        "run": str(run),
    }


def summarise(results: list[dict]) -> list[dict]:
    """Mean and std over seeds per (method, task, shots)."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        groups.setdefault((r["method"], r["task"], r["shots"]), []).append(r["accuracy"])
    return [
        {"method": m, "task": t, "shots": s, "mean": statistics.mean(v), "std": statistics.pstdev(v), "seeds": len(v)}
        for (m, t, s), v in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2]))
    ]


def markdown(summary: list[dict], shots: list[int]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in summary):
        lines += [
            f"\n**{task}** (test accuracy %, mean ± std over seeds)\n",
            "| method | " + " | ".join(f"{s} shots" for s in shots) + " |",
            "|---|" + "---|" * len(shots),
        ]
        for method in dict.fromkeys(r["method"] for r in summary if r["task"] == task):
            cells = {r["shots"]: r for r in summary if r["task"] == task and r["method"] == method}
            row = [
                f"{cells[s]['mean'] * 100:.1f} ± {cells[s]['std'] * 100:.1f}"
                if s in cells
                else (f"{cells[0]['mean'] * 100:.1f}" if 0 in cells else "")
                for s in shots
            ]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
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
        ax.set(title=f"toy {task}", xlabel="shots per class", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="style_shift, shots 1 and 16, seed 1, 20 epochs")
    parser.add_argument("--tasks", nargs="+", default=["shapes", "style_shift", "mixed"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, help="override the reference epochs (e.g. for a quick check)")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.shots, args.seeds, args.epochs = ["style_shift"], [1, 16], [1], args.epochs or 20
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = []
    for task in args.tasks:
        for method in args.methods:
            if METHODS[method][1] == "test":  # nothing is trained: one run per task
                results.append(run_once(method, task, 0, args.seeds[0], args.data_root, out, None))
                continue
            for shots in args.shots:
                for seed in args.seeds:
                    results.append(run_once(method, task, shots, seed, args.data_root, out, args.epochs))
                    r = results[-1]
                    print(f"{method} {task} {shots} shots seed {seed}: {r['accuracy']:.1%} ({r['seconds']:.0f} s)")

    summary = summarise(results)
    table = markdown(summary, args.shots)
    print(table)
    (out / "accuracy.json").write_text(json.dumps({"args": vars(args), "runs": results, "summary": summary}, indent=2))
    (out / "accuracy.md").write_text(table)
    plot(summary, out / "accuracy.png")
    flat = {f"{r['task']}/{r['method']}/{r['shots']}shot": round(r["mean"], 4) for r in summary}
    (out / "summary.json").write_text(json.dumps(flat, indent=2))
    with (out / "curves.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "method", "shots", "mean", "std", "seeds"])
        writer.writeheader()
        writer.writerows(summary)
    print(f"wrote {out}/accuracy.{{json,md,png}}, summary.json, curves.csv")


if __name__ == "__main__":
    main()
