"""Label these next, measured: uncertainty+diversity selection against random selection on the toy world.

Each task's training split is the unlabelled pool (its labels are the oracle's answers) and its test
split measures. Both strategies start from the same random label per class; every round adds as
many labels as there are classes (chosen by the strategy from the pool) and trains again from
scratch, up to ``--rounds`` labels per class. The active strategy ranks the pool exactly as the
app's "Label these next" does (:mod:`promptlab.workspace.labelling`): the round's exported
classifier, calibrated probabilities, and :func:`promptlab.workspace.active_selection.rank_for_labelling`.
Writes ``active_learning.json`` (every run), ``active_learning.md`` (mean over seeds per labels per
class, and the labels each strategy needs to reach zero-shot + 10 points) and ``active_learning.png``.

    python benchmarks/active_learning.py            # 3 tasks, CoOp and the linear probe, seeds 1-3, 8 rounds
    python benchmarks/active_learning.py --quick    # one task, the linear probe, one seed, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from promptlab.configs import toy_config_path
from promptlab.deploy.classifier import Classifier
from promptlab.methods import registered_methods
from promptlab.workspace.active_selection import rank_for_labelling

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.provenance import current_commit

STRATEGIES = ("active", "random")
TARGET_GAIN = 0.10  # "zero-shot + 10 points"


def fit_and_test(method: str, split: dict, image_root: Path, run_dir: Path, epochs: int | None) -> tuple[float, Path]:
    """Trains ``method`` on the split's training images (toy config) and tests; (accuracy, classifier file)."""
    from promptlab.cli.lightning import lightning_cli
    from promptlab.export import export_classifier
    from promptlab.run_folder import TEST_METRICS_FILE

    cls = registered_methods()[method]
    run_dir.mkdir(parents=True, exist_ok=True)
    split_file = run_dir / "split.json"
    split_file.write_text(json.dumps(split))
    args = [
        "fit" if cls.trains() else "test",
        "-c",
        str(toy_config_path(cls)),
        "--data.dataset=split",
        f"--data.split_file={split_file}",
        f"--data.root={image_root}",
        "--data.shots=0",  # every labelled image
        "--data.val_fraction=0",  # no labels spent on validation: nothing here selects on it
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.logger.init_args.name=run",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.check_val_every_n_epoch=100000",
    ]
    if epochs and cls.trains() and cls.uses_epochs:
        args.append(f"--trainer.max_epochs={epochs}")
    cli = lightning_cli(args)
    run = max((run_dir / "run").glob("version_*"), key=lambda p: p.stat().st_mtime)
    accuracy = json.loads((run / TEST_METRICS_FILE).read_text())["accuracy"]
    return accuracy, export_classifier(cli.model, run_dir / "classifier.safetensors")


def pick(
    strategy: str, classifier_file: Path, pool: list[list], labelled: list[list], root: Path, count: int, rng
) -> list[list]:
    """``count`` pool items to label next."""
    if strategy == "random":
        return rng.sample(pool, min(count, len(pool)))
    classifier = Classifier.load(classifier_file, device="cpu")
    features, probabilities = classifier.features_and_probabilities([root / item[0] for item in pool])
    labelled_features = classifier.features_and_probabilities([root / item[0] for item in labelled])[0]
    return [pool[i] for i in rank_for_labelling(probabilities, features, labelled_features, count)]


def run_curve(method: str, task: str, strategy: str, seed: int, args, work: Path) -> list[dict]:
    """One learning curve: accuracy after each round."""
    data = json.loads((Path(args.data_root) / "toy" / "splits" / f"{task}.json").read_text())
    root = Path(args.data_root) / "toy" / "images"
    classes = sorted({item[1] for item in data["train"]})
    rng = random.Random(seed)
    labelled = [rng.choice([item for item in data["train"] if item[1] == c]) for c in classes]
    pool = [item for item in data["train"] if item not in labelled]
    rows = []
    for round_ in range(args.rounds):
        start = time.time()
        run_dir = work / f"{method}-{task}-{strategy}-seed{seed}-round{round_}"
        split = {"train": labelled, "val": [], "test": data["test"]}
        accuracy, classifier_file = fit_and_test(method, split, root, run_dir, args.epochs)
        rows.append(
            {
                "method": method,
                "task": task,
                "strategy": strategy,
                "seed": seed,
                "labels_per_class": len(labelled) / len(classes),
                "labels": len(labelled),
                "accuracy": accuracy,
                "seconds": round(time.time() - start, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if round_ + 1 < args.rounds:
            chosen = pick(strategy, classifier_file, pool, labelled, root, len(classes), rng)
            labelled = labelled + chosen
            pool = [item for item in pool if item not in chosen]
    return rows


def zero_shot(task: str, args, work: Path) -> float:
    data = json.loads((Path(args.data_root) / "toy" / "splits" / f"{task}.json").read_text())
    root = Path(args.data_root) / "toy" / "images"
    split = {"train": data["train"], "val": [], "test": data["test"]}
    return fit_and_test("zeroshot", split, root, work / f"zs-{task}", None)[0]


def summarise(rows: list[dict], zero: dict[str, float]) -> dict:
    """Mean accuracy per (method, task, strategy, labels per class), and the labels to reach zero-shot + 10."""
    means: dict[tuple, list[float]] = {}
    for r in rows:
        means.setdefault((r["method"], r["task"], r["strategy"], r["labels_per_class"]), []).append(r["accuracy"])
    table = {key: statistics.mean(values) for key, values in means.items()}
    curves: dict[tuple, dict[float, float]] = {}
    for (method, task, strategy, labels), value in table.items():
        curves.setdefault((method, task, strategy), {})[labels] = value
    reach = {}
    for (method, task, strategy), curve in curves.items():
        goal = zero[task] + TARGET_GAIN
        reach[(method, task, strategy)] = next((n for n in sorted(curve) if curve[n] >= goal), None)
    return {"mean": table, "curves": curves, "reach": reach}


def markdown(summary: dict, zero: dict[str, float], rounds: int, seeds: list[int]) -> str:
    lines = [
        "# Label these next: uncertainty + diversity against random selection (toy world)",
        "",
        f"`python benchmarks/active_learning.py`: mean test accuracy over seeds {seeds}; every round adds one "
        "label per class (chosen by the strategy from the pool) and trains again.",
        "",
    ]
    curves = summary["curves"]
    for method, task in dict.fromkeys((m, t) for m, t, _ in curves):
        lines += [f"**{method} on {task}** (zero-shot {zero[task]:.1%})", ""]
        labels = sorted(curves[(method, task, "random")])
        lines += ["| labels per class | " + " | ".join(f"{n:g}" for n in labels) + " |"]
        lines += ["|---|" + "---|" * len(labels)]
        for strategy in STRATEGIES:
            cells = [f"{curves[(method, task, strategy)][n]:.1%}" for n in labels]
            lines += [f"| {strategy} | " + " | ".join(cells) + " |"]
        random_best = curves[(method, task, "random")][labels[-1]]
        active_at = next((n for n in labels if curves[(method, task, "active")][n] >= random_best), None)
        reach = {s: summary["reach"][(method, task, s)] for s in STRATEGIES}
        lines += [
            "",
            f"Random's accuracy at {labels[-1]:g} labels per class ({random_best:.1%}) is reached by active selection "
            + (f"at {active_at:g} per class." if active_at is not None else "at no round measured.")
            + " Labels per class to reach zero-shot + 10 points: "
            + ", ".join(f"{s} {reach[s]:g}" if reach[s] is not None else f"{s} not reached" for s in STRATEGIES)
            + ".",
            "",
        ]
    return "\n".join(lines)


def plot(summary: dict, zero: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for m, _, _ in summary["curves"]))
    tasks = list(dict.fromkeys(t for _, t, _ in summary["curves"]))
    figure, axes = plt.subplots(len(methods), len(tasks), figsize=(4 * len(tasks), 3.2 * len(methods)), squeeze=False)
    for axis, (method, task) in zip(axes.flat, [(m, t) for m in methods for t in tasks], strict=True):
        for strategy, style in zip(STRATEGIES, ("-o", "--s"), strict=True):
            curve = summary["curves"][(method, task, strategy)]
            axis.plot(sorted(curve), [curve[n] * 100 for n in sorted(curve)], style, label=strategy)
        axis.axhline(zero[task] * 100, color="grey", linestyle=":", label="zero-shot")
        axis.set_title(f"{method} · {task}")
        axis.set_xlabel("labels per class")
        axis.set_ylabel("test accuracy (%)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", default=".", help="the folder holding toy/ (python -m promptlab.toy.world)")
    parser.add_argument("--methods", nargs="+", default=["coop", "linear_probe"])
    parser.add_argument("--tasks", nargs="+", default=["shapes", "style_shift", "mixed"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=8, help="labels per class at the last round")
    parser.add_argument("--epochs", type=int, help="training epochs per round (default: the toy config's)")
    parser.add_argument("--out", default="benchmarks")
    parser.add_argument("--quick", action="store_true", help="shapes, the linear probe, seed 1, 3 rounds")
    parser.add_argument("--resume", action="store_true", help="keep the finished curves of --out's JSON")
    args = parser.parse_args()
    if args.quick:
        args.methods, args.tasks, args.seeds, args.rounds = ["linear_probe"], ["shapes"], [1], 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    earlier = json.loads((out / "active_learning.json").read_text()) if args.resume else {}
    rows: list[dict] = earlier.get("runs", [])
    done = {(r["method"], r["task"], r["strategy"], r["seed"]) for r in rows if r["labels_per_class"] == args.rounds}
    rows = [r for r in rows if (r["method"], r["task"], r["strategy"], r["seed"]) in done]
    with tempfile.TemporaryDirectory(prefix="promptlab-active-") as folder:
        work = Path(folder)
        zero = {task: earlier.get("zero_shot", {}).get(task) or zero_shot(task, args, work) for task in args.tasks}
        for task in args.tasks:
            for method in args.methods:
                for seed in args.seeds:
                    for strategy in STRATEGIES:
                        if (method, task, strategy, seed) in done:
                            continue
                        rows += run_curve(method, task, strategy, seed, args, work)
                        (out / "active_learning.json").write_text(
                            json.dumps({"zero_shot": zero, "runs": rows, "commit": current_commit()}, indent=1)
                        )
    summary = summarise(rows, zero)
    text = markdown(summary, zero, args.rounds, args.seeds)
    (out / "active_learning.md").write_text(text + "\n")
    plot(summary, zero, out / "active_learning.png")
    print(text)


if __name__ == "__main__":
    main()
