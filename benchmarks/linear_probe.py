"""How much a classifier on toy-clip's frozen image features can gain over zero-shot on each toy task.

A prompt learner (CoOp, MoCoOp) only moves the class text features: it is a linear classifier on the
frozen image features, so a linear probe trained on the same features bounds what it can reach.
Each accuracy is also split by whether the test image's shape and colour were ever paired in
toy-clip's pretraining (``seen``) or held out (``unseen``). Prints a table and writes
``benchmarks/linear_probe.json``.

    python benchmarks/linear_probe.py [--data toy]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

TASKS = ("shapes", "style_shift", "mixed")


def probe(train: torch.Tensor, labels: torch.Tensor, steps: int = 500) -> torch.Tensor:
    """(D, C) weights of a logistic-regression probe on normalised features (Adam, CLIP's scale 30)."""
    weights = torch.zeros(train.shape[1], int(labels.max()) + 1, requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.01)
    for _ in range(steps):
        loss = F.cross_entropy(train @ weights * 30, labels) + 1e-4 * weights.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weights.detach()


def main(argv: list[str] | None = None) -> None:
    from promptlab.backbone import FrozenCLIP
    from promptlab.toy.knn import load_split, normalise
    from promptlab.toy.world import held_out_combination

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="toy")
    parser.add_argument("--out", default="benchmarks/linear_probe.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data, clip = Path(args.data), FrozenCLIP("toy-clip", pretrained="promptlab")
    names = (data / "classnames.txt").read_text().split()
    attributes = json.loads((data / "image_attributes.json").read_text())
    with torch.no_grad():
        text = clip.encode_text([f"a photo of a {n}." for n in names])
    rows = {}
    for task in TASKS:
        (x_train, y_train), (x_test, y_test) = load_split(data, task, "train"), load_split(data, task, "test")
        with torch.no_grad():
            f_train, f_test = clip.encode_image(normalise(x_train)), clip.encode_image(normalise(x_test))
        unseen = torch.tensor([
            held_out_combination(attributes[path]["shape"], attributes[path]["colour"])
            for path, _, _ in json.loads((data / "splits" / f"{task}.json").read_text())["test"]
        ])  # fmt: skip
        half = torch.randperm(len(y_test))
        a, b = half[: len(y_test) // 2], half[len(y_test) // 2 :]
        with torch.enable_grad():
            on_train, oracle = probe(f_train, y_train), probe(f_test[a], y_test[a])
        zero_shot_right = (f_test @ text.T).argmax(1) == y_test
        probe_right = (f_test @ on_train).argmax(1) == y_test
        rows[task] = {
            "zero_shot": float(zero_shot_right.float().mean()),
            "zero_shot_seen": float(zero_shot_right[~unseen].float().mean()),
            "zero_shot_unseen": float(zero_shot_right[unseen].float().mean()),
            "probe_on_all_train_images": float(probe_right.float().mean()),
            "probe_seen": float(probe_right[~unseen].float().mean()),
            "probe_unseen": float(probe_right[unseen].float().mean()),
            "unseen_share_of_test": float(unseen.float().mean()),
            "oracle_probe_on_half_the_test_images": float(((f_test[b] @ oracle).argmax(1) == y_test[b]).float().mean()),
            "train_images": len(y_train),
        }
    print(
        "| task | zero-shot (seen / unseen pairs) | probe on all train images (seen / unseen) "
        "| oracle probe (half of test) | unseen share |\n|---|---|---|---|---|"
    )
    for task, r in rows.items():
        print(
            f"| {task} | {r['zero_shot']:.1%} ({r['zero_shot_seen']:.1%} / {r['zero_shot_unseen']:.1%}) "
            f"| {r['probe_on_all_train_images']:.1%} ({r['probe_seen']:.1%} / {r['probe_unseen']:.1%}) "
            f"| {r['oracle_probe_on_half_the_test_images']:.1%} | {r['unseen_share_of_test']:.0%} |"
        )
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
