"""``promptlab quickstart``: the offline main job, start to finish.

Generates the toy world if it is missing, measures zero-shot CLIP, learns a CoOp classifier from a
few shots, reports both accuracies side by side, exports the classifier and classifies a few
held-out images with it, all with promptlab's own tiny CLIP and no network.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Literal

from promptlab.run_folder import TEST_METRICS_FILE


def _latest_run(folder: Path) -> Path:
    return max(folder.glob("version_*"), key=lambda p: p.stat().st_mtime)


class Stages:
    """Numbered stage lines with the time each took, so a slow machine never looks stuck."""

    def __init__(self, total: int) -> None:
        self.total, self.number, self.started = total, 0, time.monotonic()

    def start(self, text: str) -> None:
        """Ends the running stage (with its time) and announces the next."""
        self.end()
        self.number += 1
        self.started = time.monotonic()
        print(f"\n[{self.number}/{self.total}] {text}", flush=True)

    def end(self) -> None:
        """Prints how long the running stage took."""
        if self.number:
            print(f"      ({time.monotonic() - self.started:.1f} s)", flush=True)


def quickstart(
    *,
    task: Literal["shapes", "style_shift", "mixed"] = "style_shift",
    shots: int = 16,
    epochs: int = 200,
    seed: int = 1,
    data_root: str = ".",
    out: str = "runs/quickstart",
) -> int:
    """Zero-shot CLIP against CoOp on the offline toy world, exported and used (no network).

    Args:
        task: the toy task.
        shots: training images per class.
        epochs: CoOp's training epochs.
        seed: the few-shot draw and training seed.
        data_root: folder holding toy/ (generated when missing).
        out: folder of the two runs.
    """
    # Imported here, not at the top, so that `promptlab --help` does not import torch and Lightning.
    from lightning.pytorch.callbacks import Callback

    from promptlab.cli.classify import classify
    from promptlab.cli.lightning import lightning_cli
    from promptlab.configs import toy_config_path
    from promptlab.export import export_run
    from promptlab.methods import CoOp, ZeroShotCLIP
    from promptlab.toy.world import generate

    stages = Stages(5)

    class TrainingStage(Callback):
        """Announces training once the data (and the feature cache) are ready."""

        def on_train_start(self, trainer, pl_module) -> None:
            stages.start(f"training CoOp: {epochs} epochs on {shots} images per class")

    root, runs = Path(data_root), Path(out)
    stages.start(f"the toy world in {root / 'toy'}")
    if not (root / "toy" / "splits" / f"{task}.json").is_file():
        print("      generating its images (once) ...", flush=True)
        generate(root / "toy", pretrain_images=0)  # task images are the same with or without them
    common = [
        f"--data.dataset=toy_{task}",
        f"--data.root={root}",
        f"--data.seed={seed}",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.enable_model_summary=false",
    ]
    stages.start("zero-shot CLIP on the test images")
    lightning_cli(
        ["test", "-c", str(toy_config_path(ZeroShotCLIP)), *common, "--trainer.logger.init_args.name=zeroshot"]
    )
    zero_shot = json.loads((_latest_run(runs / "zeroshot") / TEST_METRICS_FILE).read_text())

    stages.start("image features of the training images, cached once for every later run")
    fit_args = [
        f"--data.shots={shots}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.logger.init_args.name=coop",
    ]
    lightning_cli(["fit", "-c", str(toy_config_path(CoOp)), *common, *fit_args], callbacks=[TrainingStage()])
    run = _latest_run(runs / "coop")
    coop = json.loads((run / TEST_METRICS_FILE).read_text())

    stages.start("export the classifier and classify 4 held-out images")
    classifier = export_run(run)
    test_items = json.loads((root / "toy" / "splits" / f"{task}.json").read_text())["test"]
    examples = random.Random(0).sample(test_items, 4)
    classify([str(root / "toy" / "images" / p) for p, _, _ in examples], classifier=str(classifier), no_progress=True)
    print(f"(true classes: {', '.join(name for _, _, name in examples)})")
    stages.end()

    print(f"\nToy task '{task}': test accuracy on {zero_shot['num_samples']} images")
    print(f"  zero-shot CLIP          {zero_shot['accuracy']:.1%}")
    print(f"  CoOp, {shots:>2} shots/class    {coop['accuracy']:.1%}")
    print(f"Run folder: {run}\nClassifier: {classifier}")
    print(f"Try it: promptlab classify --classifier {classifier} <images or folders>")
    return 0
