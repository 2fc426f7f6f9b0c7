"""Calibration and "none of these" on the offline toy world.

1. Calibration: zero-shot CLIP and CoOp (16 shots) on each toy task with all 8 shapes; the test
   fits a temperature on the few-shot validation split and reports the test ECE (torchmetrics, 15
   bins) and NLL before and after it.
2. Open set: every method with a toy config trained on 5 shapes (circle, square, triangle, star,
   hexagon: labels 0-4 of the toy splits), exported, then shown the test images of all 8 and 40
   content-free pictures (:mod:`promptlab.toy.content_free`). Each candidate score separates known
   shapes from the 3 unknown ones (cross, diamond, heart): its AUROC, and at the threshold that keeps
   95% of the known validation images, the share of known test images kept, of unknown ones and of
   content-free pictures rejected. The candidates: the calibrated top probability (``msp``), MCM on
   the zero-shot text features (``mcm``, Ming et al. 2022, temperature 1), GL-MCM (``gl_mcm``, Miyai et
   al. 2023: MCM plus the largest MCM over the patch tokens, each projected as the CLS token is), the
   cosine to the nearest training image (``knn``), to the nearest class mean (``prototype``), and the
   sum of the last two, the familiarity promptlab's classifiers carry (``familiarity``), for which the
   table also reports
   the classifier file's own default threshold: known test images kept, accuracy on all known images
   and on the kept ones, unknown and content-free pictures rejected. NoLA is left out: it learns from
   an unlabelled pool that holds all 8 shapes, so nothing is unknown to it.

    python benchmarks/open_set.py            # shapes, seeds 1-3 (about 8 minutes on 2 CPU cores)
    python benchmarks/open_set.py --tasks shapes style_shift mixed   # every toy task
    python benchmarks/open_set.py --quick    # one task, one seed, 20 epochs, zero-shot and CoOp
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.accuracy import LABEL_FREE, METHODS, _run_cli
from benchmarks.provenance import current_commit
from promptlab.configs import toy_config_path
from promptlab.methods import CoOp, ZeroShotCLIP

OUT = Path(__file__).parent / "open_set.json"
KNOWN = 5  # labels 0-4 of the toy splits are the known shapes
KEEP_KNOWN = 0.95
SHOTS = 16
CANDIDATES = ("msp", "mcm", "gl_mcm", "knn", "prototype", "familiarity")
CALIBRATED = ("Zero-shot CLIP", "CoOp")  # the calibration table's methods


def known_split(data_root: Path, task: str, out: Path) -> Path:
    """The toy task's split restricted to the known shapes in train and val (test keeps them too, for
    the run's own test); returns the split file."""
    split = json.loads((data_root / "toy" / "splits" / f"{task}.json").read_text())
    known = {name: [s for s in split[name] if s[1] < KNOWN] for name in ("train", "val", "test")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(known))
    return out


def candidate_scores(
    features: torch.Tensor,
    local: torch.Tensor,
    probabilities: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    text: torch.Tensor,
) -> dict[str, np.ndarray]:
    """Every candidate score of (N, D) normalised features, (N, P, D) normalised patch features and (N, C)
    probabilities, higher = more known."""
    from promptlab.deploy.open_set import class_means

    to_reference = features @ reference.T  # (N, R)
    prototypes = class_means(reference, labels, int(labels.max()) + 1)
    knn, prototype = to_reference.amax(-1), (features @ prototypes.T).amax(-1)
    mcm = (features @ text.T).softmax(-1).amax(-1)  # temperature 1 on cosines
    local_mcm = (local @ text.T).softmax(-1).amax(-1).amax(-1)  # (N, P, C) -> the most confident patch
    return {
        "msp": probabilities.amax(-1).numpy(),
        "mcm": mcm.numpy(),
        "gl_mcm": (mcm + local_mcm).numpy(),
        "knn": knn.numpy(),
        "prototype": prototype.numpy(),
        "familiarity": (knn + prototype).numpy(),
    }


@contextlib.contextmanager
def patch_features(classifier) -> Iterator[list[torch.Tensor]]:
    """Collects the (B, P, D) normalised patch features of every image the classifier encodes meanwhile:
    the image transformer's patch tokens through its final LayerNorm and projection, as GL-MCM takes them
    (the classifier's own encoder changes included: NoLA's visual prompts sit between the CLS token and
    the patches, MaPLe's deep prompts after the patches).
    """
    visual = classifier.backbone.model.visual
    patches = visual.grid_size[0] * visual.grid_size[1]
    first = 1 + classifier.backbone.visual_prompt_count
    collected: list[torch.Tensor] = []

    def keep(_module, _inputs, tokens: torch.Tensor) -> None:  # (B, L, width): CLS, prompts?, patches, prompts?
        assert tokens.shape[1] >= first + patches, tokens.shape
        local = visual.ln_post(tokens[:, first : first + patches]) @ visual.proj
        collected.append(torch.nn.functional.normalize(local.detach().float(), dim=-1).cpu())

    handle = visual.transformer.register_forward_hook(keep)
    try:
        yield collected
    finally:
        handle.remove()


def open_set_scores(
    classifier_file: Path, data_root: Path, split_file: Path, task: str, text: torch.Tensor | None
) -> dict:
    """The exported classifier on all 8 shapes' test images and the content-free pictures; ``text``: the
    zero-shot text features for MCM (None: the classifier is zero-shot, its head's are).
    """
    from promptlab.deploy.classifier import Classifier
    from promptlab.toy.content_free import content_free_images

    images = data_root / "toy" / "images"
    test = json.loads((data_root / "toy" / "splits" / f"{task}.json").read_text())["test"]
    validation = json.loads(split_file.read_text())["val"]
    classifier = Classifier.load(classifier_file, device="cpu")
    assert classifier.familiarity is not None, "the test run fitted no familiarity reference"
    reference, labels = classifier.familiarity.reference, classifier.familiarity.labels
    text = classifier.head.weight.detach() if text is None else text
    paths = [str(images / path) for path, _, _ in test]
    content_free = [image for _, image in content_free_images(10, 32)]

    def scores(inputs: list) -> dict[str, np.ndarray]:
        with patch_features(classifier) as local:
            features, probabilities = classifier.features_and_probabilities(inputs, batch_size=256)
        return candidate_scores(features, torch.cat(local), probabilities, reference, labels, text)

    test_scores, free_scores = scores(paths), scores(content_free)
    validation_scores = scores([str(images / path) for path, _, _ in validation])
    truth = np.array([label for _, label, _ in test])
    known = truth < KNOWN
    row: dict = {}
    for name in CANDIDATES:
        threshold = float(np.quantile(validation_scores[name], 1 - KEEP_KNOWN))
        row[name] = {
            "auroc": float(roc_auc_score(known, test_scores[name])),
            "known_kept": float((test_scores[name][known] >= threshold).mean()),
            "unknown_rejected": float((test_scores[name][~known] < threshold).mean()),
            "content_free_rejected": float((free_scores[name] < threshold).mean()),
        }
    predictions = classifier.predict(paths, top_k=1, batch_size=256)  # the file's own default rule
    rejected = np.array([p.none_of_these for p in predictions])
    names = classifier.class_names
    correct = np.array([t < KNOWN and p.label == names[t] for p, t in zip(predictions, truth, strict=True)])
    free_rejected = [p.none_of_these for p in classifier.predict(content_free, top_k=1)]
    row["default"] = {
        "threshold": classifier.unfamiliar_below,
        "known_kept": float(1 - rejected[known].mean()),
        "known_accuracy_all": float(correct[known].mean()),
        "known_accuracy_kept": float(correct[known & ~rejected].mean()),
        "unknown_rejected": float(rejected[~known].mean()),
        "content_free_rejected": float(np.mean(free_rejected)),
    }
    return row


def calibration_row(task: str, seed: int, method: str, data_root: Path, runs: Path, epochs: int) -> dict:
    """Zero-shot or CoOp on all 8 shapes: the temperature and the test ECE and NLL before and after it."""
    config = str(toy_config_path(CoOp if method == "CoOp" else ZeroShotCLIP))
    command = ["fit", f"--trainer.max_epochs={epochs}"] if method == "CoOp" else ["test"]
    args = [*command, "-c", config, f"--data.root={data_root}", f"--data.seed={seed}", f"--data.dataset=toy_{task}"]
    _, metrics = _run_cli(args, runs, f"{method}_{task}_{seed}_all".replace(" ", ""))
    keys = ("temperature", "ece_before", "ece_after", "nll_before", "nll_after")
    return {"task": task, "seed": seed, "method": method, "accuracy": metrics["accuracy"]} | {
        k: metrics["calibration"][k] for k in keys
    }


def open_set_row(
    task: str, seed: int, method: str, data_root: Path, runs: Path, epochs: int | None, text: torch.Tensor | None
) -> tuple[dict, Path]:
    """One method trained on the known shapes of one task and seed, exported, and measured; returns the
    row and the classifier file."""
    from promptlab.cli.export import export
    from promptlab.export import export_run

    cls = METHODS[method]
    split = known_split(data_root, task, runs / "splits" / f"{task}_known.json")
    data = ["--data.dataset=split", f"--data.split_file={split}", f"--data.root={data_root / 'toy' / 'images'}"]
    config, trains = str(toy_config_path(cls)), cls.trains()
    args = ["fit" if trains else "test", "-c", config, *data, f"--data.seed={seed}", f"--data.shots={SHOTS}"]
    if trains:
        args.append("--trainer.check_val_every_n_epoch=100000")
        if cls.uses_epochs and (epochs or cls.epochs_by_shots):
            args.append(f"--trainer.max_epochs={epochs or cls.epochs_by_shots[SHOTS]}")
    run_dir, metrics = _run_cli(args, runs, f"{method}_{task}_{seed}_known".replace(" ", ""))
    if trains:
        classifier_file = export_run(run_dir)
    else:  # a test run of a method that learns nothing: export its config on the same data
        classifier_file = run_dir / "classifier.safetensors"
        export(*data, f"--data.seed={seed}", f"--data.shots={SHOTS}", config=[config], output=str(classifier_file))
    row = {"task": task, "seed": seed, "method": method, "known_accuracy": metrics["accuracy"]}
    return row | open_set_scores(classifier_file, data_root, split, task, text), classifier_file


def _mean(rows: list[dict], *keys: str) -> float:
    values = []
    for row in rows:
        for key in keys:
            row = row[key]
        values.append(row)
    return statistics.mean(values)


def _grouped(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows by their values of ``keys``, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def calibration_table(rows: list[dict]) -> str:
    """Mean over seeds per task and method."""
    lines = [
        "| task | method | accuracy | T | ECE before / after | NLL before / after |",
        "|---|---|---|---|---|---|",
    ]
    for (task, method), group in _grouped(rows, "task", "method").items():
        lines.append(
            f"| {task} | {method} | {_mean(group, 'accuracy'):.1%} | {_mean(group, 'temperature'):.2f} | "
            f"{_mean(group, 'ece_before'):.3f} / {_mean(group, 'ece_after'):.3f} | "
            f"{_mean(group, 'nll_before'):.3f} / {_mean(group, 'nll_after'):.3f} |"
        )
    return "\n".join(lines)


def candidates_table(rows: list[dict]) -> str:
    """AUROC (and unknown / content-free rejected at 95% of known validation images kept) per candidate,
    mean over tasks and seeds per method."""
    lines = [
        "| method | " + " | ".join(CANDIDATES) + " |",
        "|---|" + "---|" * len(CANDIDATES),
    ]
    for (method,), group in _grouped(rows, "method").items():
        cells = [
            f"{_mean(group, name, 'auroc'):.3f} ({_mean(group, name, 'unknown_rejected'):.0%} / "
            f"{_mean(group, name, 'content_free_rejected'):.0%})"
            for name in CANDIDATES
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_table(rows: list[dict]) -> str:
    """The classifier files' own rule (familiarity at its default threshold), mean over seeds per task and method."""
    lines = [
        "| task | method | AUROC | known kept | known acc. all / kept | unknown rejected | content-free rejected |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, method), group in _grouped(rows, "task", "method").items():
        lines.append(
            f"| {task} | {method} | {_mean(group, 'familiarity', 'auroc'):.3f} | "
            f"{_mean(group, 'default', 'known_kept'):.1%} | {_mean(group, 'default', 'known_accuracy_all'):.1%} / "
            f"{_mean(group, 'default', 'known_accuracy_kept'):.1%} | "
            f"{_mean(group, 'default', 'unknown_rejected'):.1%} | "
            f"{_mean(group, 'default', 'content_free_rejected'):.1%} |"
        )
    return "\n".join(lines)


def table(report: dict) -> str:
    """The three tables of a report, as the docs show them."""
    return "\n\n".join(
        [
            "Calibration (all 8 shapes):\n\n" + calibration_table(report["calibration"]),
            "Candidate scores, AUROC (unknown / content-free rejected at 95% of known validation images kept), "
            "mean over tasks and seeds:\n\n" + candidates_table(report["open_set"]),
            "The classifier file's rule (familiarity, default threshold):\n\n" + default_table(report["open_set"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["shapes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in LABEL_FREE])
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: each toy config's)")
    parser.add_argument("--data_root", default=".", help="folder holding toy/ (generated when missing)")
    parser.add_argument("--runs", default="runs/open_set")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true", help="one task, one seed, 20 epochs, zero-shot and CoOp")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seeds, args.epochs, args.methods = args.tasks[:1], args.seeds[:1], 20, list(CALIBRATED)
    data_root, runs = Path(args.data_root).resolve(), Path(args.runs)
    if not (data_root / "toy" / "splits").is_dir():
        from promptlab.toy.world import generate

        generate(data_root / "toy", pretrain_images=0)
    methods = ["Zero-shot CLIP", *[m for m in args.methods if m != "Zero-shot CLIP"]]  # its text features first
    calibration, open_set = [], []
    for task in args.tasks:
        for seed in args.seeds:
            calibration += [calibration_row(task, seed, m, data_root, runs, args.epochs or 200) for m in CALIBRATED]
            text = None  # MCM's zero-shot text features, from the zero-shot classifier file
            for method in methods:
                row, classifier_file = open_set_row(task, seed, method, data_root, runs, args.epochs, text)
                if text is None:
                    from promptlab.deploy.classifier import Classifier

                    text = Classifier.load(classifier_file, device="cpu").head.weight.detach()
                open_set.append(row)
    report = {"calibration": calibration, "open_set": open_set, "commit": current_commit()}
    report["table"] = table(report)
    print(report["table"])
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
