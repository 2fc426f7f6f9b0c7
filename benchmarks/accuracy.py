"""Accuracy on the offline toy world: every method, shots 1-16, seeds 1-3, through the promptlab CLI.

Few-shot methods run every shot count; zero-shot runs once per task; label-free methods (NoLA) run
once per seed on the unlabelled pool; base-to-new runs on ``--base_to_new`` tasks (harmonic mean).
Writes ``<out>/accuracy.json`` (every run), ``accuracy.md`` (mean and std over seeds),
``accuracy.png`` (accuracy against shots, like the CoOp paper's figure) and ``summary.json`` (flat
metrics for ``dvc metrics show``) plus ``curves.csv`` (for ``dvc plots show``).

    python benchmarks/accuracy.py            # the full grid (about 40 minutes on 2 CPU cores)
    python benchmarks/accuracy.py --quick    # one task, 2 shot counts, 1 seed, few epochs (CI)
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

from promptlab.configs import toy_config_path
from promptlab.methods import registered_methods

# Every registered method with a toy config, by its label; its contract says how it runs: methods
# that learn from names only are tested once per task, label-free ones once per seed on the pool.
METHODS = {cls.label: cls for cls in registered_methods().values() if cls.toy is not None}
LABEL_FREE = {label for label, cls in METHODS.items() if cls.learns_from == "unlabelled"}
# Base-to-new needs contexts that apply to unseen classes: class-specific ones have none for them.
BASE_TO_NEW_ARGS = {"CoOp": ["--model.init_args.class_specific=false"]}


def _run_cli(args: list[str], runs: Path, name: str) -> tuple[Path, dict]:
    """Runs one promptlab command; returns its run folder and test metrics."""
    from promptlab.cli.lightning import lightning_cli
    from promptlab.run_folder import TEST_METRICS_FILE

    common = [
        f"--trainer.logger.init_args.save_dir={runs}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    lightning_cli([*args, *common])
    run = max((runs / name).glob("version_*"), key=lambda p: p.stat().st_mtime)
    return run, json.loads((run / TEST_METRICS_FILE).read_text())


def run_once(
    method: str,
    task: str,
    shots: int,
    seed: int,
    data_root: str,
    runs: Path,
    epochs: int | None,
    base_to_new: bool = False,
) -> dict:
    """One method on one toy task; with ``base_to_new``, trained on the base half of the classes and
    tested on both halves (``accuracy`` is then their harmonic mean)."""
    cls = METHODS[method]
    config, subcommand = str(toy_config_path(cls)), "fit" if cls.trains() else "test"
    protocol = "_base_to_new" if base_to_new else ""
    name = f"{method}_{task}{protocol}_{shots}shot_seed{seed}".replace(" ", "")
    args = [subcommand, "-c", config, f"--data.dataset=toy_{task}", f"--data.root={data_root}", f"--data.seed={seed}"]
    if method in LABEL_FREE:
        args += [f"--data.unlabelled={Path(data_root) / 'toy' / 'unlabelled'}"]
        args += [f"--model.init_args.descriptions_file={Path(data_root) / 'toy' / 'descriptions.json'}"]
        args += [f"--trainer.max_epochs={epochs}"] if epochs else []
    elif subcommand == "fit":
        args += [f"--data.shots={shots}", "--trainer.check_val_every_n_epoch=100000"]
        if cls.uses_epochs and (epochs or cls.epochs_by_shots):  # else the toy config's epochs
            args.append(f"--trainer.max_epochs={epochs or cls.epochs_by_shots[shots]}")
    start = time.time()
    if not base_to_new:
        run, metrics = _run_cli(args, runs, name)
        row = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
        if (run / "nola_stages.json").is_file():  # label-free stages on the same test images
            stages = json.loads((run / "nola_stages.json").read_text())
            row |= {k: stages[k] for k in ("stage1_accuracy", "stage2_accuracy") if k in stages}
    else:
        args += BASE_TO_NEW_ARGS.get(method, [])
        run, base = _run_cli([*args, "--data.subsample_classes=base"], runs, name)
        test = ["test", *args[1:], "--data.subsample_classes=new"]
        if subcommand == "fit":
            (checkpoint,) = (run / "checkpoints").glob("*.ckpt")
            test.append(f"--ckpt_path={checkpoint}")
        _, new = _run_cli(test, runs, name + "_new")
        b, n = base["accuracy"], new["accuracy"]
        row = {"accuracy": 2 * b * n / (b + n) if b + n else 0.0, "base": b, "new": n}
    return {
        "method": method,
        "task": f"{task} base-to-new" if base_to_new else task,
        "shots": shots,
        "seed": seed,
        **row,
        "seconds": time.time() - start,
        "run": str(run),
    }


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
    parser.add_argument("--base_to_new", nargs="*", default=["mixed"], help="tasks also run base-to-new")
    parser.add_argument("--base_to_new_shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, help="override the reference epochs (e.g. for a quick check)")
    parser.add_argument("--data_root", default=".", help="folder holding the toy world in toy/")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--keep_others",
        action="store_true",
        help="rerun only --methods; keep the other methods' runs from <out>/accuracy.json",
    )
    parser.add_argument("--runs", default="runs/accuracy", help="where each run's folder goes (not committed)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.shots, args.seeds, args.epochs = ["style_shift"], [1, 16], [1], args.epochs or 20
        args.base_to_new = ["mixed"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results, runs = [], Path(args.runs)
    for task in args.tasks:
        for method in args.methods:
            untrained = not METHODS[method].trains()  # zero-shot: one run per task
            for shots in [0] if untrained or method in LABEL_FREE else args.shots:
                for seed in args.seeds[:1] if untrained else args.seeds:
                    results.append(run_once(method, task, shots, seed, args.data_root, runs, args.epochs))
                    r = results[-1]
                    print(f"{method} {task} {shots} shots seed {seed}: {r['accuracy']:.1%} ({r['seconds']:.0f} s)")
    for task in args.base_to_new:
        for method in (m for m in args.methods if m not in LABEL_FREE and METHODS[m].transfers_to_new_classes):
            trained = METHODS[method].trains()
            for seed in args.seeds if trained else args.seeds[:1]:
                shots = args.base_to_new_shots if trained else 0
                results.append(run_once(method, task, shots, seed, args.data_root, runs, args.epochs, base_to_new=True))
                r = results[-1]
                print(f"{method} {task} base-to-new seed {seed}: base {r['base']:.1%}, new {r['new']:.1%}")

    if args.keep_others and (out / "accuracy.json").is_file():
        kept = [r for r in json.loads((out / "accuracy.json").read_text())["runs"] if r["method"] not in args.methods]
        results = kept + results
    summary = summarise(results)
    by_shots = [r for r in summary if "base" not in r]
    table = markdown(by_shots, args.shots) + label_free_markdown(summary) + base_to_new_markdown(summary)
    print(table)
    (out / "accuracy.json").write_text(json.dumps({"args": vars(args), "runs": results, "summary": summary}, indent=2))
    (out / "accuracy.md").write_text(table)
    plot(by_shots, out / "accuracy.png")
    flat = {f"{r['task']}/{r['method']}/{r['shots']}shot": round(r["mean"], 4) for r in summary}
    (out / "summary.json").write_text(json.dumps(flat, indent=2))
    write_curves(by_shots, args.shots, out / "curves.csv")
    print(f"wrote {out}/accuracy.{{json,md,png}}, summary.json, curves.csv")


if __name__ == "__main__":
    main()
