"""How NoLA's final classifier fits its teacher on toy-clip (a 128-wide, 4-layer, 32 px CLIP), by the
number of visual prompts and the epochs: its agreement with the DINO labeller on the pool, and its
accuracy against zero-shot CLIP's on the pool and on each toy task's test images.

    python benchmarks/nola_fit.py     # 0, 4 and 16 prompts x 20 and 50 epochs, seed 1: about 25 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.nola_loss_signals import gain, pool_truth, run_once, toy_nola, zero_shot_reference
from benchmarks.provenance import current_commit
from promptlab.data.transforms import test_transform
from promptlab.methods.nola import pool_agreement
from promptlab.toy.dino import load_toy_dino

OUT = Path(__file__).parent / "nola_fit.json"


def linear_bound(world: Path, seed: int, steps: int = 2000) -> dict:
    """How far any linear head on toy-clip's frozen image features (no prompts, CLIP's test view) can agree
    with the DINO labeller's pool labels: one fitted to those labels directly (full batch, Adam, 0.01), its
    agreement on the very images it fitted. The same seed gives the labeller the runs train on.
    """
    model, data = toy_nola(world, seed)
    data.setup("fit")
    dino = mock.patch("promptlab.methods.nola.load_dino", lambda name: load_toy_dino())
    with dino, model.backbone.without_visual_prompts(), torch.no_grad():
        teacher = model._stage2(data, None)  # (N,) the DINO labeller's labels, -1: unreadable
        features = torch.zeros(len(teacher), model.backbone.embed_dim)
        for images, _, indices in filter(None, data.pool_dataloader(test_transform(model.preprocess))):
            features[indices] = model.backbone.encode_image(images)
    keep = teacher >= 0
    x, y = F.normalize(features[keep], dim=-1), teacher[keep]
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(model.class_names))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(head(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        fitted = head(x).argmax(-1)
    truth = pool_truth(data, world)[keep]
    return {
        "agreement_with_dino": pool_agreement(fitted, y),
        "teacher_accuracy": pool_agreement(y, truth),
        "head_accuracy": pool_agreement(fitted, truth),
    }


def table(results: dict) -> str:
    """The Markdown table."""
    lines = [
        "| prompts | epochs | final / DINO labeller on the pool | pool accuracy: final / DINO labeller / zero-shot "
        "| gain on the tests (shapes, style_shift, mixed) | gain (pool and mixed test) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        pool = r["pool_accuracy"]
        accuracies = " / ".join(f"{100 * pool[k]:.1f}" for k in ("final", "dino", "zero_shot"))
        tests = ", ".join(f"{100 * g:+.1f}" for g in r["test_gain"].values())
        fit = 100 * r["figures"]["final_vs_dino"]
        lines.append(f"| {r['prompts']} | {r['epochs']} | {fit:.1f} | {accuracies} | {tests} | {100 * gain(r):+.1f} |")
    bound = results.get("linear_bound")
    if bound:
        lines += [
            "",
            f"A linear head fitted directly to the DINO labeller's pool labels on toy-clip's frozen features agrees "
            f"with them on {100 * bound['agreement_with_dino']:.1f}% of the pool (its accuracy "
            f"{100 * bound['head_accuracy']:.1f}%, the labeller's {100 * bound['teacher_accuracy']:.1f}%).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=".", help="folder holding the toy world in toy/")
    parser.add_argument("--prompts", type=int, nargs="+", default=[0, 4, 16])
    parser.add_argument("--epochs", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    world = Path(args.data_root).resolve()
    bound = linear_bound(world, args.seed)
    reference = zero_shot_reference(world)
    runs = []
    for n_prompts in args.prompts:
        for epochs in args.epochs:
            run = {"prompts": n_prompts, "epochs": epochs, "seed": args.seed}
            run |= run_once(world, load_toy_dino, args.seed, epochs, reference, n_prompts=n_prompts)
            print(json.dumps(run), flush=True)
            runs.append(run)
    results = {"commit": current_commit(), "runs": runs, "linear_bound": bound}
    results["table"] = table(results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
