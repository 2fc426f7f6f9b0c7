"""``promptlab quickstart``: the offline main job, start to finish.

Generates the toy world if it is missing, measures zero-shot CLIP, learns a CoOp classifier from a
few shots, reports both accuracies side by side, exports the classifier and classifies a few
held-out images with it, all with promptlab's own tiny CLIP and no network.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from promptlab.configs import toy_config_path
from promptlab.reporting import TEST_METRICS_FILE


def _latest_run(folder: Path) -> Path:
    return max(folder.glob("version_*"), key=lambda p: p.stat().st_mtime)


def quickstart_command(argv: list[str]) -> int:
    """Runs zero-shot and CoOp on a toy task and writes an exported classifier."""
    from promptlab.cli import classify_command, lightning_cli
    from promptlab.export import export_run
    from promptlab.methods import CoOp, ZeroShotCLIP
    from promptlab.toy.world import generate

    parser = argparse.ArgumentParser(prog="promptlab quickstart", description=quickstart_command.__doc__)
    parser.add_argument("--task", default="style_shift", choices=["shapes", "style_shift", "mixed"])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data_root", default=".", help="folder holding toy/ (generated when missing)")
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args(argv)

    data_root, out = Path(args.data_root), Path(args.out)
    if not (data_root / "toy" / "splits" / f"{args.task}.json").is_file():
        print(f"Generating the toy world's task images in {data_root / 'toy'} ...")
        generate(data_root / "toy", pretrain_images=0)  # task images are the same with or without them
    common = [
        f"--data.dataset=toy_{args.task}",
        f"--data.root={data_root}",
        f"--data.seed={args.seed}",
        f"--trainer.logger.init_args.save_dir={out}",
    ]
    print("\n== 1/3 zero-shot CLIP")
    lightning_cli(
        ["test", "-c", str(toy_config_path(ZeroShotCLIP)), *common, "--trainer.logger.init_args.name=zeroshot"]
    )
    zero_shot = json.loads((_latest_run(out / "zeroshot") / TEST_METRICS_FILE).read_text())

    print(f"\n== 2/3 CoOp, {args.shots} shots per class, {args.epochs} epochs")
    fit_args = [
        f"--data.shots={args.shots}",
        f"--trainer.max_epochs={args.epochs}",
        "--trainer.logger.init_args.name=coop",
    ]
    lightning_cli(["fit", "-c", str(toy_config_path(CoOp)), *common, *fit_args])
    run = _latest_run(out / "coop")
    coop = json.loads((run / TEST_METRICS_FILE).read_text())

    print("\n== 3/3 export and classify")
    classifier = export_run(run)
    test_items = json.loads((data_root / "toy" / "splits" / f"{args.task}.json").read_text())["test"]
    examples = random.Random(0).sample(test_items, 4)
    classify_command(
        ["--classifier", str(classifier), *(str(data_root / "toy" / "images" / p) for p, _, _ in examples)]
    )
    print(f"(true classes: {', '.join(name for _, _, name in examples)})")

    print(f"\nToy task '{args.task}': test accuracy on {zero_shot['num_samples']} images")
    print(f"  zero-shot CLIP          {zero_shot['accuracy']:.1%}")
    print(f"  CoOp, {args.shots:>2} shots/class    {coop['accuracy']:.1%}")
    print(f"Run folder: {run}\nClassifier: {classifier}")
    print(f"Try it: promptlab classify --classifier {classifier} <images or folders>")
    return 0
