"""Which figures a label-free NoLA run can compute without any label tell that it did worse than
zero-shot CLIP.

NoLA trains on an unlabelled pool, so a run without labelled images cannot measure itself. It can
compute, on that pool, how far its labellers agree: the description classifier (stage 1), the DINO
labeller (stage 2), the final classifier (stage 3) and zero-shot CLIP. This benchmark runs NoLA with
three labellers of different quality (the shipped toy-dino; toy-dino as it was before its retraining,
whose labels are worse than zero-shot's; toy-clip's own image tower as the labeller) on two generated
worlds (the toy world, and the same generator with another seed: new task images and a new pool),
two seeds each, and records every agreement figure next to what the labels hidden from the run say:
the final classifier's accuracy minus zero-shot's, on the pool and on each task's test images. A run
lost when that gain is below 0 on every labelled image of the pool's kind (the pool and the ``mixed``
test images, 2,240 in all), not on the pool's 1,280 alone, where 0.3 points are 4 images.

For each figure, a band outside which runs lost is fitted on the toy world's runs (each end the
midpoint between a losing and a winning run, or open) and checked on the second world's, which it
never saw; the figure whose band misclassifies fewest runs is the one NoLA's report judges by.

    python benchmarks/nola_loss_signals.py            # 12 runs of 20 epochs, about 30 minutes on 2 CPU cores
    python benchmarks/nola_loss_signals.py --quick    # one world, one labeller, one seed, 1 epoch
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.provenance import current_commit
from promptlab.data.datamodule import FewShotDataModule
from promptlab.data.transforms import test_transform
from promptlab.methods import NoLA, ZeroShotCLIP
from promptlab.methods.nola import pool_agreement
from promptlab.toy.dino import build_toy_dino, load_toy_dino
from promptlab.toy.render import SHAPES
from promptlab.toy.world import TASKS, generate

OUT = Path(__file__).parent / "nola_loss_signals.json"
TEMPLATES = ["a photo of a {}.", "an image of a {}", "a {} shape"]  # configs/toy/nola.yaml's
ZERO_SHOT_TEMPLATE = "a photo of a {}."  # the toy datasets' template: the accuracy grid's zero-shot
HEADINGS = {  # short column headings, agreements in %
    "final_vs_dino": "final / DINO",
    "final_vs_stage1": "final / stage 1",
    "final_vs_zero_shot": "final / zero-shot",
    "stage1_vs_dino": "stage 1 / DINO",
    "dino_vs_zero_shot": "DINO / zero-shot",
}
REPORTED_AS = {  # figure -> its key in NoLA's own stage report (what the app shows)
    "final_vs_dino": "pool_agreement_final_vs_dino",
    "final_vs_stage1": "pool_agreement_final_vs_stage1",
    "final_vs_zero_shot": "pool_agreement_final_vs_zero_shot",
    "stage1_vs_dino": "pool_label_agreement_stage1_vs_dino",
    "dino_vs_zero_shot": "pool_agreement_dino_vs_zero_shot",
}
OLD_TOY_DINO_COMMIT = "7936918"  # the last commit that shipped toy-dino before its retraining
FIGURES = {  # label-free figures, each an agreement on the pool between two of the four classifiers
    "final_vs_dino": "final classifier vs DINO labeller (its teacher)",
    "final_vs_stage1": "final classifier vs description classifier",
    "final_vs_zero_shot": "final classifier vs zero-shot CLIP",
    "stage1_vs_dino": "description classifier vs DINO labeller",
    "dino_vs_zero_shot": "DINO labeller vs zero-shot CLIP",
}


def old_toy_dino(scratch: Path) -> torch.nn.Module:
    """toy-dino's weights as shipped before its retraining, read from the git history."""
    path = scratch / "toy-dino-old.safetensors"
    try:
        blob = subprocess.run(
            ["git", "show", f"{OLD_TOY_DINO_COMMIT}:promptlab/weights/toy-dino.safetensors"],
            capture_output=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(
            f"The old toy-dino comes from commit {OLD_TOY_DINO_COMMIT} of the git history, which this checkout "
            "lacks; run from a full clone (git fetch --unshallow)."
        ) from error
    path.write_bytes(blob)
    return load_toy_dino(path)


def labellers(scratch: Path) -> dict[str, Callable[[], torch.nn.Module]]:
    """Labeller name -> a function building that frozen ViT."""
    return {
        "toy-dino": load_toy_dino,
        "toy-dino before retraining": lambda: old_toy_dino(scratch),
        "toy-clip's image tower": lambda: build_toy_dino(warm_start=True).requires_grad_(False).eval(),
    }


@torch.no_grad()
def pool_predictions(model: torch.nn.Module, data: FewShotDataModule) -> torch.Tensor:
    """(N,) the model's class for each pool image (-1: unreadable)."""
    model.eval()
    predictions = torch.full((len(data.unlabelled_pool[1]),), -1)
    for batch in data.pool_dataloader(test_transform(model.preprocess)):
        if batch is not None:
            images, _, indices = batch
            predictions[indices] = model(images).argmax(-1)
    return predictions


def test_accuracy(model: torch.nn.Module, world: Path, task: str) -> float:
    """Accuracy on a toy task's test split, as ``promptlab test`` measures it."""
    data = FewShotDataModule(root=str(world), dataset=f"toy_{task}", num_workers=0, test_batch_size=256)
    model.connect_data(data)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    return float(trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"])


def pool_truth(data: FewShotDataModule, world: Path) -> torch.Tensor:
    """(N,) the pool's hidden labels, from unlabelled/labels.json (never shown to the run)."""
    hidden = json.loads((world / "toy" / "unlabelled" / "labels.json").read_text())
    return torch.tensor([SHAPES.index(hidden[Path(s.path).as_posix()]) for s in data.unlabelled_pool[1]])


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation (ties broken by order; 0 when either side is constant)."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    rx, ry = (torch.tensor(v).argsort().argsort().double() for v in (x, y))
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def pool_data(world: Path, seed: int = 1) -> FewShotDataModule:
    """``world``'s unlabelled pool as configs/toy/nola.yaml reads it (class names from ``toy_mixed``)."""
    return FewShotDataModule(
        root=str(world),
        dataset="toy_mixed",
        label_free=True,
        unlabelled=str(world / "toy" / "unlabelled"),
        batch_size=128,
        test_batch_size=256,
        num_workers=0,
        seed=seed,
    )


def toy_nola(world: Path, seed: int, n_prompts: int = 16) -> tuple[NoLA, FewShotDataModule]:
    """NoLA as configs/toy/nola.yaml sets it up on ``world``'s pool, seeded, connected to its data."""
    L.seed_everything(seed, verbose=False)
    data = pool_data(world, seed)
    model = NoLA(
        class_names=list(SHAPES),
        backbone="toy-clip",
        pretrained="promptlab",
        dino="toy-dino",
        descriptions_file=str(world / "toy" / "descriptions.json"),
        templates=TEMPLATES,
        n_prompts=n_prompts,
        label_smoothing=0.1,
        lr=0.004,
        weight_decay=0.01,
    )
    model.connect_data(data)
    return model, data


def run_once(
    world: Path,
    labeller: Callable[[], torch.nn.Module],
    seed: int,
    epochs: int,
    zero_shot: dict,
    n_prompts: int = 16,
) -> dict:
    """One NoLA run; its label-free figures and its accuracy against zero-shot's on hidden labels."""
    model, data = toy_nola(world, seed, n_prompts)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=1000,
    )
    started = time.perf_counter()
    with mock.patch("promptlab.methods.nola.load_dino", lambda name: labeller()):
        trainer.fit(model, datamodule=data)
    final = pool_predictions(model, data)
    dino, stage1 = model.pool_labels.cpu(), model.stage1_pool_labels.cpu()
    truth, zs = zero_shot["truth"], zero_shot["pool"]
    figures = {
        "final_vs_dino": pool_agreement(final, dino),
        "final_vs_stage1": pool_agreement(final, stage1),
        "final_vs_zero_shot": pool_agreement(final, zs),
        "stage1_vs_dino": pool_agreement(stage1, dino),
        "dino_vs_zero_shot": pool_agreement(dino, zs),
    }
    pool = {
        "final": pool_agreement(final, truth),
        "dino": pool_agreement(dino, truth),
        "zero_shot": pool_agreement(zs, truth),
    }
    tests = {task: test_accuracy(model, world, task) for task in TASKS}
    return {
        "figures": figures,
        "nola_reported": {figure: model.stage_report.get(key) for figure, key in REPORTED_AS.items()},
        "pool_accuracy": pool,
        "pool_gain": pool["final"] - pool["zero_shot"],
        "test_accuracy": tests,
        "test_gain": {task: tests[task] - zero_shot["tests"][task] for task in TASKS},
        "images": {"pool": int((truth >= 0).sum()), "mixed_test": zero_shot["mixed_test_images"]},
        "seconds": time.perf_counter() - started,
    }


def zero_shot_reference(world: Path) -> dict:
    """Zero-shot CLIP's pool predictions, the pool's hidden labels and zero-shot's test accuracy per task."""
    data = pool_data(world)
    model = ZeroShotCLIP(
        class_names=list(SHAPES), backbone="toy-clip", pretrained="promptlab", templates=[ZERO_SHOT_TEMPLATE]
    )
    model.connect_data(data)
    data.setup("fit")
    return {
        "pool": pool_predictions(model, data),
        "truth": pool_truth(data, world),
        "tests": {task: test_accuracy(model, world, task) for task in TASKS},
        "mixed_test_images": len(json.loads((world / "toy" / "splits" / "mixed.json").read_text())["test"]),
    }


def gain(run: dict) -> float:
    """The final classifier's accuracy minus zero-shot's on every labelled image of the pool's kind: the pool
    itself and the ``mixed`` task's test images (all four styles), counted by image.
    """
    pool, test = run["images"]["pool"], run["images"]["mixed_test"]
    return (pool * run["pool_gain"] + test * run["test_gain"]["mixed"]) / (pool + test)


def predicts_loss(value: float, rule: dict) -> bool:
    """Whether ``rule`` (a band of agreement outside which runs lost) calls a run with ``value`` a loss."""
    return value < rule["low"] or value > rule["high"]


def band_rule(runs: list[dict], figure: str) -> dict:
    """The band on ``figure`` outside which runs lost to zero-shot (:func:`gain`), inside which they did not,
    that misclassifies the fewest of ``runs``: each end the midpoint between two runs' values, or open
    (0 or 1). A labeller that agrees too little with the others is weak; one that agrees with them on
    nearly everything adds nothing, and then the visual prompts' cost remains, so both ends can matter.
    Ties go to an open end, then to the widest band.
    """
    values = sorted({r["figures"][figure] for r in runs})
    cuts = [0.0, *[(a + b) / 2 for a, b in itertools.pairwise(values)], 1.0]
    best: tuple | None = None
    for low in cuts:
        for high in (c for c in cuts if c >= low):
            rule = {"low": low, "high": high}
            errors = sum(predicts_loss(r["figures"][figure], rule) != (gain(r) < 0) for r in runs)
            key = (errors, (low > 0) + (high < 1), -(high - low))
            if best is None or key < best[0]:
                best = (key, rule)
    assert best is not None
    return best[1] | {"misclassified": best[0][0], "runs": len(runs)}


def analyse(runs: list[dict], fit_world: str, check_world: str) -> dict:
    """Per figure: its rank correlation with the pool gain over all runs, the band fitted on ``fit_world``
    and how many of ``check_world``'s runs it calls right.
    """
    analysis = {}
    fitted_on = [r for r in runs if r["world"] == fit_world]
    checked_on = [r for r in runs if r["world"] == check_world]
    gains = [gain(r) for r in runs]
    for figure in FIGURES:
        rule = band_rule(fitted_on, figure)
        right = sum(predicts_loss(r["figures"][figure], rule) == (gain(r) < 0) for r in checked_on)
        edges = [edge for edge, open_end in ((rule["low"], 0.0), (rule["high"], 1.0)) if edge != open_end]
        values = [r["figures"][figure] for r in checked_on]
        analysis[figure] = {
            "spearman_with_gain": spearman([r["figures"][figure] for r in runs], gains),
            **rule,
            "held_out_right": right,
            "held_out_runs": len(checked_on),
            "held_out_margin": min((abs(v - e) for v in values for e in edges), default=1.0),
        }
    return analysis


def choose(analysis: dict) -> str:
    """The figure whose fitted band misclassifies the fewest runs of both worlds, then whose band's edges lie
    farthest from the held-out runs' values (the rule least likely to flip on a new run).
    """

    def wrong(figure: str) -> tuple[int, float]:
        a = analysis[figure]
        return a["misclassified"] + a["held_out_runs"] - a["held_out_right"], -a["held_out_margin"]

    return min(analysis, key=wrong)


def summarise(runs: list[dict], epochs: int) -> dict:
    """The results file: every run, each figure's rule and the chosen figure."""
    worlds = list(dict.fromkeys(r["world"] for r in runs))
    analysis = analyse(runs, worlds[0], worlds[-1])
    chosen = choose(analysis)
    results = {
        "commit": current_commit(),
        "epochs": epochs,
        "runs": runs,
        "analysis": analysis,
        "chosen": {"figure": chosen, "reported_as": REPORTED_AS[chosen]}
        | {end: analysis[chosen][end] for end in ("low", "high")},
    }
    return results | {"table": table(results)}


def table(results: dict) -> str:
    """Markdown: every run's figures and gains, then each figure's rule."""
    lines = [
        "| world | labeller | seed | "
        + " | ".join(HEADINGS[f] for f in FIGURES)
        + " | pool accuracy: final / zero-shot | gain on the pool | gain on the tests (shapes, style_shift, mixed) "
        "| gain (pool and mixed test) |",
        "|---|---|---|" + "---|" * len(FIGURES) + "---|---|---|---|",
    ]
    for r in results["runs"]:
        figures = " | ".join(f"{100 * r['figures'][f]:.0f}" for f in FIGURES)
        pool = r["pool_accuracy"]
        tests = ", ".join(f"{100 * g:+.1f}" for g in r["test_gain"].values())
        lines.append(
            f"| {r['world']} | {r['labeller']} | {r['seed']} | {figures} | {100 * pool['final']:.1f} / "
            f"{100 * pool['zero_shot']:.1f} | {100 * r['pool_gain']:+.1f} | {tests} | {100 * gain(r):+.1f} |"
        )
    lines += [
        "",
        "| figure | Spearman with the gain | no loss between (fitted on the toy world; misclassified) "
        "| second world called right | nearest second-world run to an edge |",
        "|---|---|---|---|---|",
    ]
    for figure, a in results["analysis"].items():
        name = f"**{FIGURES[figure]}** (chosen)" if figure == results["chosen"]["figure"] else FIGURES[figure]
        lines.append(
            f"| {name} | {a['spearman_with_gain']:+.2f} | {100 * a['low']:.1f}% and "
            f"{100 * a['high']:.1f}% ({a['misclassified']} of {a['runs']}) "
            f"| {a['held_out_right']} of {a['held_out_runs']} | {100 * a['held_out_margin']:.1f} points |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=".", help="folder holding the toy world in toy/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="configs/toy/nola.yaml's")
    parser.add_argument("--second_world_seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the toy world, toy-dino, seed 1, 1 epoch")
    parser.add_argument("--reanalyse", action="store_true", help="recompute the analysis of the runs in --out")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.reanalyse:
        saved = json.loads(Path(args.out).read_text())
        results = summarise(saved["runs"], saved["epochs"]) | {"commit": saved["commit"]}
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(results["table"])
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        worlds = {"toy": Path(args.data_root).resolve()}
        if not args.quick:
            second = scratch / "second"
            generate(second / "toy", seed=args.second_world_seed, pretrain_images=0)
            worlds[f"seed {args.second_world_seed}"] = second
        chosen = labellers(scratch)
        if args.quick:
            chosen = {"toy-dino": chosen["toy-dino"]}
        seeds, epochs = ([1], 1) if args.quick else (args.seeds, args.epochs)
        runs = []
        for world_name, world in worlds.items():
            reference = zero_shot_reference(world)
            for labeller_name, labeller in chosen.items():
                for seed in seeds:
                    run = {"world": world_name, "labeller": labeller_name, "seed": seed}
                    run |= run_once(world, labeller, seed, epochs, reference)
                    print(json.dumps(run), flush=True)
                    runs.append(run)
    results = summarise(runs, epochs)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
