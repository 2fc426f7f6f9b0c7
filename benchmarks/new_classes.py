"""A class added by name, without retraining: a method trained on 5 toy shapes, extended to all 8.

Trains CoOp with one context shared by every class (or MoCoOp) on the first 5 shapes of the toy world's
``shapes`` task (16 shots, seeds 1-3, the toy config otherwise), adds the other 3 shape names with
``promptlab export --classes`` (their text features computed with the learned context) and
classifies the test images of those 3 new shapes among all 8; zero-shot CLIP does the same 8-way
classification of the same images. Writes ``new_classes_<method>.json`` and ``new_classes_<method>.md``.

    python benchmarks/new_classes.py [--data_root .] [--method coop|mocoop]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from promptlab.cli import main as promptlab
from promptlab.configs import toy_config_path
from promptlab.deploy.classifier import Classifier
from promptlab.methods import CoOp, MoCoOp, ZeroShotCLIP

TRAINED = 5
METHODS = {"coop": CoOp, "mocoop": MoCoOp}
METHOD_ARGS = {"coop": ["--model.init_args.class_specific=false"], "mocoop": []}
LABELS = {"coop": "Shared-context CoOp", "mocoop": "MoCoOp"}


def accuracy(classifier_file: Path, items: list[list], root: Path) -> float:
    predictions = Classifier.load(classifier_file, device="cpu").predict([root / path for path, _, _ in items])
    return sum(p.label == name for p, (_, _, name) in zip(predictions, items, strict=True)) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", default=".", help="the folder holding toy/ (python -m promptlab.toy.world)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="default: the toy config's")
    parser.add_argument("--method", choices=["coop", "mocoop"], default="coop", help="coop: with a shared context")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    toy = Path(args.data_root) / "toy"
    root = toy / "images"
    split = json.loads((toy / "splits" / "shapes.json").read_text())
    names = sorted({(label, name) for _, label, name in split["train"]})
    all_names = [name for _, name in names]
    new = set(all_names[TRAINED:])
    new_test = [item for item in split["test"] if item[2] in new]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        zero_shot = work / "zero-shot.safetensors"
        zs_config = str(toy_config_path(ZeroShotCLIP))
        assert promptlab(["export", "-c", zs_config, f"--data.root={args.data_root}", "--data.dataset=toy_shapes",
                          "-o", str(zero_shot)]) == 0  # fmt: skip
        zero = accuracy(zero_shot, new_test, root)
        for seed in args.seeds:
            trained = {k: [i for i in v if i[1] < TRAINED] for k, v in split.items()}
            split_file = work / f"split-{seed}.json"
            split_file.write_text(json.dumps(trained))
            runs = work / f"runs-{seed}"
            fit = ["fit", "-c", str(toy_config_path(METHODS[args.method])), *METHOD_ARGS[args.method],
                   "--data.dataset=split", f"--data.split_file={split_file}", f"--data.root={root}",
                   f"--data.seed={seed}", "--data.shots=16", f"--trainer.logger.init_args.save_dir={runs}",
                   "--trainer.enable_progress_bar=false", "--trainer.check_val_every_n_epoch=100000"]  # fmt: skip
            fit += [f"--trainer.max_epochs={args.epochs}"] if args.epochs else []
            assert promptlab(fit) == 0
            run = next(runs.rglob("version_*"))
            extended = work / f"extended-{seed}.safetensors"
            assert promptlab(["export", "--run", str(run), "-o", str(extended), "--classes", *all_names]) == 0
            trained_test = [item for item in split["test"] if item[2] not in new]
            rows.append(
                {
                    "seed": seed,
                    "new_classes_extended": accuracy(extended, new_test, root),
                    "trained_classes_extended": accuracy(extended, trained_test, root),
                    "new_classes_zero_shot": zero,
                    "trained_classes_zero_shot": accuracy(zero_shot, trained_test, root),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    (out / f"new_classes_{args.method}.json").write_text(json.dumps(rows, indent=1))
    text = render(rows, args.method)
    (out / f"new_classes_{args.method}.md").write_text(text)
    print(text)


def render(rows: list[dict], method: str) -> str:
    """8-way accuracy of the extended classifier and of zero-shot CLIP, mean over seeds."""
    mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if k != "seed"}
    return (
        f"| test images of | {LABELS[method]}, extended to 8 | zero-shot CLIP, 8 classes |\n|---|---|---|\n"
        f"| the {8 - TRAINED} new shapes | {mean['new_classes_extended']:.1%} | {mean['new_classes_zero_shot']:.1%} |\n"
        f"| the {TRAINED} trained shapes | {mean['trained_classes_extended']:.1%} | "
        f"{mean['trained_classes_zero_shot']:.1%} |\n"
        f"\nSeeds {', '.join(str(r['seed']) for r in rows)}."
    )


if __name__ == "__main__":
    main()
