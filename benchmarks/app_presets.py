"""The app's training presets on toy-world projects: learned accuracy against zero-shot CLIP.

Each project has three toy shapes (circle, square, triangle) in all four rendering styles, 10 or 30
images per class; the app holds out 30% of each class. Every run goes through the app's own API
(`start_run`: DVC snapshot, background worker, zero-shot baseline on the same held-out images).

    python benchmarks/app_presets.py            # about 6 minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.ui_support draws the images

from promptlab.toy.render import STYLES
from promptlab.workspace.project import Workspace
from promptlab.workspace.runs import RunSettings, start_run
from tests.ui_support import SHAPES, toy_png, wait_for_run

OUT = Path(__file__).resolve().parent


def main() -> None:
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in (10, 30):
            for seed in (1, 2, 3):
                rng = random.Random(seed)
                project = Workspace(Path(tmp) / f"{per_class}-{seed}").create("shapes")
                for shape in SHAPES:
                    project.add_class(shape)
                    project.add_images(shape, [(f"{i}.png", toy_png(shape, rng, STYLES)) for i in range(per_class)])
                for method in ("coop", "mocoop"):
                    for epochs in (50, 200):
                        record = wait_for_run(
                            project, start_run(project, RunSettings(method, epochs=epochs, seed=seed))
                        )
                        row = results.setdefault(
                            f"{per_class}/class {method} {epochs} epochs", {"learned": [], "zero-shot": []}
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
    lines = ["| images per class, method, epochs | learned | zero-shot (same images) |", "|---|---|---|"]
    for name, row in results.items():
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
