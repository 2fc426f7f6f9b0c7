"""The app's training presets on toy-world projects: learned accuracy against zero-shot CLIP.

Each project has three toy shapes (circle, square, triangle) in all four rendering styles, 10 or 30
images per class; the app holds out 30% of each class. Every run goes through the app's own API
(`start_run`: DVC snapshot, background worker, zero-shot baseline on the same held-out images).

    python benchmarks/app_presets.py                       # every method that learns from labels
    python benchmarks/app_presets.py --methods linear_probe --keep_others   # rerun one, keep the rest
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

from promptlab.methods import registered_methods
from promptlab.toy.render import STYLES
from promptlab.workspace.project import Workspace
from promptlab.workspace.runs import RunSettings, start_run
from tests.ui_support import SHAPES, toy_png, wait_for_run

OUT = Path(__file__).resolve().parent


PRESET_EPOCHS = (50, 200)  # the Train page's Quick and Standard presets


def main(argv: list[str] | None = None) -> None:
    learners = [key for key, cls in registered_methods().items() if cls.learns_from == "labels"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=learners, choices=learners)
    parser.add_argument("--keep_others", action="store_true", help="keep other methods' rows of app_presets.json")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in (10, 30):
            for seed in (1, 2, 3):
                rng = random.Random(seed)
                project = Workspace(Path(tmp) / f"{per_class}-{seed}").create("shapes")
                for shape in SHAPES:
                    project.add_class(shape)
                    project.add_images(shape, [(f"{i}.png", toy_png(shape, rng, STYLES)) for i in range(per_class)])
                for method in args.methods:
                    for epochs in PRESET_EPOCHS if registered_methods()[method].uses_epochs else PRESET_EPOCHS[:1]:
                        record = wait_for_run(
                            project, start_run(project, RunSettings(method, epochs=epochs, seed=seed))
                        )
                        shown = f"{epochs} epochs" if registered_methods()[method].uses_epochs else "fitted once"
                        row = results.setdefault(
                            f"{per_class}/class {method} {shown}", {"learned": [], "zero-shot": []}
                        )
                        row["learned"].append(record["accuracy"])
                        row["zero-shot"].append(record["zero_shot_accuracy"])
                        print(
                            per_class,
                            seed,
                            method,
                            epochs,
                            record["accuracy"],
                            record["zero_shot_accuracy"],
                            flush=True,
                        )
    if args.keep_others and (OUT / "app_presets.json").is_file():
        kept = json.loads((OUT / "app_presets.json").read_text())
        results = {k: v for k, v in kept.items() if k.split()[1] not in args.methods} | results
    lines = ["| images per class, method, epochs | learned | zero-shot (same images) |", "|---|---|---|"]
    for name, row in sorted(results.items(), key=lambda item: int(item[0].split("/")[0])):
        learned, zero_shot = statistics.mean(row["learned"]), statistics.mean(row["zero-shot"])
        lines.append(f"| {name} | {learned:.1%} | {zero_shot:.1%} |")
    table = "\n".join(lines)
    print(table)
    (OUT / "app_presets.json").write_text(json.dumps(results, indent=2))
    (OUT / "app_presets.md").write_text(
        f"Mean held-out accuracy over seeds 1-3 (`python benchmarks/app_presets.py`).\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
