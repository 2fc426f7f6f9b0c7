"""The app's training choices on toy-world projects, by training images per class, against zero-shot CLIP.

Each project has three toy shapes (circle, square, triangle) in all four rendering styles: 1, 2, 4,
10 or 30 training images per class plus 9 held-out images per class that measure (the app's
held-out share is set so that exactly 9 are held out). Every run goes through the app's own API
(`start_run`: DVC snapshot, background worker, validation on a share of the training images,
zero-shot baseline on the same held-out images). Besides each method's row, the table gives the
app's default choice for that many images (:func:`promptlab.workspace.defaults.default_run`), and
that choice with the run's own fallback (zero-shot's classifier when it did better on validation).
The configurations are every method the registry offers that learns from labelled images, at the
app's standard preset (200 epochs, or one fit for methods fitted in one go), and CoOp's shared
context at the quick preset (50 epochs).

    python benchmarks/app_presets.py                         # every configuration, seeds 1-3
    python benchmarks/app_presets.py --sizes 1 2 --seeds 1   # a subset
    python benchmarks/app_presets.py --configs clap prolip --keep_others   # rerun some, keep the other rows
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.ui_support draws the images

from benchmarks.provenance import current_commit
from promptlab.methods import registered_methods
from promptlab.toy.render import STYLES
from promptlab.workspace.defaults import default_run
from promptlab.workspace.project import Workspace
from promptlab.workspace.run_record import RunSettings
from promptlab.workspace.runs import start_run
from tests.ui_support import SHAPES, toy_png, wait_for_run

OUT = Path(__file__).resolve().parent
HELD_OUT = 9  # per class
SIZES = (1, 2, 4, 10, 30)
STANDARD_EPOCHS = 200  # the app's presets (ui/pages/train.py): standard 200, quick 50


def _configs() -> dict[str, tuple[str, int, dict]]:
    """name -> (method, epochs, extra init args): what the app offers, with the context choice for CoOp."""
    configs = {
        "coop, one context per class, 200 epochs": ("coop", 200, {"class_specific": True}),
        "coop, shared context, 50 epochs": ("coop", 50, {"class_specific": False}),
    }
    for key, cls in registered_methods().items():
        if key == "coop" or cls.learns_from != "labels" or not cls.trains():
            continue
        name = f"{key}, {STANDARD_EPOCHS} epochs" if cls.uses_epochs else key
        configs[name] = (key, STANDARD_EPOCHS if cls.uses_epochs else 1, {})
    return configs


CONFIGS = _configs()


def project_with(root: Path, train: int, seed: int):
    rng = random.Random(seed)
    project = Workspace(root).create("shapes")
    for shape in SHAPES:
        project.add_class(shape)
        project.add_images(shape, [(f"{i}.png", toy_png(shape, rng, STYLES)) for i in range(train + HELD_OUT)])
    return project


def settings_for(method: str, epochs: int, extra: dict, train: int, seed: int) -> RunSettings:
    return RunSettings(method, epochs=epochs, seed=seed, test_fraction=HELD_OUT / (train + HELD_OUT), extra=extra)


def run(project, settings: RunSettings) -> dict:
    record = wait_for_run(project, start_run(project, settings), timeout_s=900)
    if record["status"] != "finished":
        raise RuntimeError(f"{settings} {record['status']}: {record.get('error')}")
    validation = record.get("validation") or {}
    fallback = record["zero_shot_accuracy"] if validation.get("zero_shot_better") else record["accuracy"]
    return {
        "learned": record["accuracy"],
        "zero_shot": record["zero_shot_accuracy"],
        "with_fallback": fallback,
        "num_test": record["num_test"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--keep_others", action="store_true", help="keep the rows of app_presets.json this run does not redo"
    )
    args = parser.parse_args(argv)
    rows: list[dict] = []
    if args.keep_others and (OUT / "app_presets.json").is_file():
        redone = {(size, seed, name) for size in args.sizes for seed in args.seeds for name in args.configs}
        previous = json.loads((OUT / "app_presets.json").read_text())
        rows = [r for r in previous if (r["train_per_class"], r["seed"], r["config"]) not in redone]
    commit = current_commit()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # seed by seed: a partial run already covers every size
            for train in args.sizes:
                project = project_with(Path(tmp) / f"{train}-{seed}", train, seed)
                for name in args.configs:
                    method, epochs, extra = CONFIGS[name]
                    result = run(project, settings_for(method, epochs, extra, train, seed))
                    rows.append({"train_per_class": train, "seed": seed, "config": name, "commit": commit} | result)
                    print(json.dumps(rows[-1]), flush=True)
                    (OUT / "app_presets.json").write_text(json.dumps(rows, indent=1))
    table = render(rows)
    print(table)
    (OUT / "app_presets.md").write_text(table + "\n")


def render(rows: list[dict]) -> str:
    """Mean held-out accuracy per size and configuration, the default choice marked."""
    lines = [
        f"Mean held-out accuracy over seeds (`python benchmarks/app_presets.py`): three toy shapes, {HELD_OUT} "
        "held-out images per class; zero-shot CLIP measured on the same images in every run.",
        "",
        "| training images per class | configuration | learned | with the zero-shot fallback | zero-shot |",
        "|---|---|---|---|---|",
    ]
    for train in sorted({r["train_per_class"] for r in rows}):
        default = default_run(train)
        for name in dict.fromkeys(r["config"] for r in rows):
            group = [r for r in rows if r["train_per_class"] == train and r["config"] == name]
            if not group:
                continue
            means = {k: statistics.mean(r[k] for r in group) for k in ("learned", "with_fallback", "zero_shot")}
            mark = " **(app default)**" if default.benchmark_config == name else ""
            lines.append(
                f"| {train} | {name}{mark} | {means['learned']:.1%} | {means['with_fallback']:.1%} | "
                f"{means['zero_shot']:.1%} |"
            )
        if default.benchmark_config is None:
            zero = statistics.mean(r["zero_shot"] for r in rows if r["train_per_class"] == train)
            lines.append(f"| {train} | zero-shot **(app default)** | {zero:.1%} | {zero:.1%} | {zero:.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
