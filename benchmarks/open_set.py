"""Calibration and "none of these" on the offline toy world.

1. Calibration: zero-shot CLIP and CoOp (16 shots) on each toy task with all 8 shapes; the test
   fits a temperature on the few-shot validation split (4 images per class) and reports the test
   ECE (torchmetrics, 15 bins) before and after it.
2. Open set: the same methods trained on 5 shapes (circle, square, triangle, star, hexagon: labels
   0-4 of the toy splits), exported, then shown the test images of all 8; the calibrated top
   probability separates known shapes from the 3 unknown ones (cross, diamond, heart). Reports the
   AUROC of known-vs-unknown, and at the threshold that keeps 95% of the known images: the accuracy
   on the kept known images and the share of unknown images answered "none of these".

    python benchmarks/open_set.py            # 3 tasks x seeds 1-3 (about 15 minutes on 2 CPU cores)
    python benchmarks/open_set.py --quick    # one task, one seed, 20 epochs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.accuracy import _run_cli
from benchmarks.provenance import current_commit
from promptlab.configs import toy_config_path
from promptlab.methods import CoOp, ZeroShotCLIP

OUT = Path(__file__).parent / "open_set.json"
KNOWN = 5  # labels 0-4 of the toy splits are the known shapes
KEEP_KNOWN = 0.95


def known_split(data_root: Path, task: str, out: Path) -> Path:
    """The toy task's split restricted to the known shapes in train and val (test keeps them too, for
    the run's own test); returns the split file."""
    split = json.loads((data_root / "toy" / "splits" / f"{task}.json").read_text())
    known = {name: [s for s in split[name] if s[1] < KNOWN] for name in ("train", "val", "test")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(known))
    return out


def open_set_scores(classifier_file: Path, data_root: Path, task: str) -> dict:
    """The exported classifier on all 8 shapes' test images: AUROC and the 95%-of-known threshold."""
    from promptlab.deploy.classifier import Classifier

    test = json.loads((data_root / "toy" / "splits" / f"{task}.json").read_text())["test"]
    classifier = Classifier.load(classifier_file, device="cpu")
    paths = [str(data_root / "toy" / "images" / path) for path, _, _ in test]
    probabilities = classifier.predict_proba(paths, batch_size=256).numpy()
    labels = np.array([label for _, label, _ in test])
    known = labels < KNOWN
    top = probabilities.max(-1)
    threshold = float(np.quantile(top[known], 1 - KEEP_KNOWN))
    kept = known & (top >= threshold)
    correct = probabilities.argmax(-1) == labels
    return {
        "auroc": float(roc_auc_score(known, top)),
        "threshold": threshold,
        "known_kept": float(kept.sum() / known.sum()),
        "known_accuracy_all": float(correct[known].mean()),
        "known_accuracy_kept": float(correct[kept].mean()),
        "unknown_rejected": float((top[~known] < threshold).mean()),
        "temperature": classifier.temperature,
    }


def run(task: str, seed: int, method: str, data_root: Path, runs: Path, epochs: int) -> dict:
    """One method on one task and seed: calibration on 8 shapes, open set on 5."""
    from promptlab.export import export_run

    config = str(toy_config_path(CoOp if method == "CoOp" else ZeroShotCLIP))
    command = ["fit"] if method == "CoOp" else ["test"]
    common = [*command, "-c", config, f"--data.root={data_root}", f"--data.seed={seed}"]
    common += [f"--trainer.max_epochs={epochs}"] if method == "CoOp" else []
    _, metrics = _run_cli([*common, f"--data.dataset=toy_{task}"], runs, f"{method}_{task}_{seed}_all")
    split = known_split(data_root, task, runs / "splits" / f"{task}_known.json")
    known_data = ["--data.dataset=split", f"--data.split_file={split}", f"--data.root={data_root / 'toy' / 'images'}"]
    run_dir, _ = _run_cli([*common, *known_data], runs, f"{method}_{task}_{seed}_known")
    if method == "CoOp":
        classifier_file = export_run(run_dir)
    else:  # a test run has no checkpoint: export the config, calibrated on the same known-shape validation
        from promptlab.cli.export import export

        classifier_file = run_dir / "classifier.safetensors"
        export(*known_data, f"--data.seed={seed}", config=[config], output=str(classifier_file))
    calibration = metrics["calibration"]
    return {
        "task": task,
        "seed": seed,
        "method": method,
        "accuracy": metrics["accuracy"],
        "temperature": calibration["temperature"],
        "ece_before": calibration["ece_before"],
        "ece_after": calibration["ece_after"],
        "nll_before": calibration["nll_before"],
        "nll_after": calibration["nll_after"],
        **{f"open_{k}": v for k, v in open_set_scores(classifier_file, data_root, task).items()},
    }


def table(rows: list[dict]) -> str:
    """Mean over seeds per task and method."""
    lines = [
        "| task | method | accuracy | T | ECE before / after | NLL before / after | open-set AUROC "
        "| known acc. (all / kept 95%) | unknown rejected at 95% known |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"]), []).append(row)
    for (task, method), group in groups.items():

        def mean(key: str, group: list[dict] = group) -> float:
            return statistics.mean(r[key] for r in group)

        lines.append(
            f"| {task} | {method} | {mean('accuracy'):.1%} | {mean('temperature'):.2f} | {mean('ece_before'):.3f} / "
            f"{mean('ece_after'):.3f} | {mean('nll_before'):.3f} / {mean('nll_after'):.3f} | "
            f"{mean('open_auroc'):.3f} | {mean('open_known_accuracy_all'):.1%} / "
            f"{mean('open_known_accuracy_kept'):.1%} | {mean('open_unknown_rejected'):.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["shapes", "style_shift", "mixed"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--data_root", default=".", help="folder holding toy/ (generated when missing)")
    parser.add_argument("--runs", default="runs/open_set")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true", help="one task, one seed, 20 epochs")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seeds, args.epochs = args.tasks[:1], args.seeds[:1], 20
    data_root = Path(args.data_root).resolve()
    if not (data_root / "toy" / "splits").is_dir():
        from promptlab.toy.world import generate

        generate(data_root / "toy", pretrain_images=0)
    rows = [
        run(task, seed, method, data_root, Path(args.runs), args.epochs)
        for task in args.tasks
        for seed in args.seeds
        for method in ("Zero-shot CLIP", "CoOp")
    ]
    text = table(rows)
    print(text)
    Path(args.out).write_text(json.dumps({"rows": rows, "table": text, "commit": current_commit()}, indent=2))


if __name__ == "__main__":
    main()
