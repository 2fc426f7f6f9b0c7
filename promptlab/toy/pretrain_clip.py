"""Contrastive pretraining of the tiny CLIP (``toy-clip``) on the toy world's captions.

Captions repeat and name only some attributes, so the loss uses soft targets: caption j is a
positive for image i whenever every attribute it names holds for image i (no false negatives).
Captions are drawn afresh from each image's attributes at every step (40% shape only, 20% colour
only, 40% both). Seeded; writes fp16 safetensors and a JSON report.

    python -m promptlab.toy.pretrain_clip --data toy
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from promptlab.backbone.frozen_clip import FrozenCLIP, create_trainable_clip
from promptlab.backbone.text_tower import TextTower
from promptlab.toy.knn import knn_accuracy, load_split, normalise
from promptlab.toy.render import Attributes
from promptlab.toy.world import caption


def load_pairs(data: Path) -> tuple[torch.Tensor, list[Attributes]]:
    """All pretraining images as one (N, 3, 32, 32) uint8 tensor, and their attributes."""
    records = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    images = np.stack([np.asarray(Image.open(data / r["image"]).convert("RGB")) for r in records])
    attributes = [Attributes(**{k: r[k] for k in Attributes.__dataclass_fields__}) for r in records]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), attributes


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> normalised float, randomly shifted by up to 2 pixels."""
    padded = F.pad(images.float() / 255, (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    return normalise(padded[:, :, dy : dy + 32, dx : dx + 32])


def soft_targets(attributes: list[Attributes], named: list[dict]) -> torch.Tensor:
    """(B, B) 1 where caption j's named attributes all hold for image i."""
    return torch.tensor([[float(all(getattr(a, k) == v for k, v in n.items())) for n in named] for a in attributes])


def encode_text(model: Any, tower: TextTower, token_ids: torch.Tensor) -> torch.Tensor:
    """Trainable text encoding, truncated at the batch's last EOT (exact, and ~5x cheaper)."""
    token_ids = token_ids[:, : int(token_ids.argmax(-1).max()) + 1]
    return tower.encode(model.token_embedding(token_ids), token_ids.argmax(-1))


@torch.no_grad()
def zero_shot_accuracy(
    backbone: FrozenCLIP, data: Path, task: str, template: str, limit: int = 400, split: str = "test"
) -> float:
    """Zero-shot shape accuracy on a split of a task (about ``limit`` images, evenly spread)."""
    images, labels = load_split(data, task, split)
    step = max(1, len(labels) // limit)
    names = (data / "classnames.txt").read_text().split()
    text = backbone.encode_text([template.format(name) for name in names])
    predictions = (backbone.encode_image(normalise(images[::step])) @ text.T).argmax(-1)
    return float((predictions == labels[::step]).float().mean())


def pretrain(data: Path, out: Path, steps: int, batch_size: int, lr: float, warmup: int, seed: int) -> dict:
    """Pretrains toy-clip contrastively on the toy world's captioned images; returns its report."""
    torch.manual_seed(seed)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    model, tower, tokenizer = create_trainable_clip("toy-clip")
    images, attributes = load_pairs(data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    start, history = time.time(), []
    for _ in (progress := tqdm(range(steps), desc="toy-clip pretraining")):
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        batch_attributes = [attributes[i] for i in index.tolist()]
        texts, named = zip(*(caption(a, rng) for a in batch_attributes), strict=True)
        targets = soft_targets(batch_attributes, list(named))
        image_features = F.normalize(model.encode_image(augment(images[index], generator)), dim=-1)
        text_features = F.normalize(encode_text(model, tower, tokenizer(list(texts))), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
        loss = 0.5 * (
            F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, (targets / targets.sum(0, keepdim=True)).T)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
        history.append(loss.item())

    save_fp16(model, out)
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, **run_summary(history, start)}


def save_fp16(model: torch.nn.Module, out: Path) -> None:
    """Writes a module's weights as fp16 safetensors, as the toy weights ship."""
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(out))


def run_summary(history: list[float], start: float) -> dict[str, float]:
    """Minutes since ``start`` and the mean loss of the first and last 50 steps, for the JSON reports."""
    return {
        "minutes": (time.time() - start) / 60,
        "loss_first_50": float(np.mean(history[:50])),
        "loss_last_50": float(np.mean(history[-50:])),
    }


TASKS = ("shapes", "style_shift", "mixed")
TEMPLATES = ("a photo of a {}.", "an image of a {}", "a drawing of a {}.")


def evaluate(backbone: FrozenCLIP, data: Path) -> dict:
    """Zero-shot accuracy per task and template on the validation and test splits, and k-NN accuracy of
    the image features (train split as memory, test split as queries).
    """
    return {
        f"zero_shot_{split}": {
            f"{task} / {template}": zero_shot_accuracy(backbone, data, task, template, split=split)
            for task in TASKS
            for template in TEMPLATES
        }
        for split in ("val", "test")
    } | {"knn": {task: knn_accuracy(lambda x: backbone.encode_image(normalise(x)), data, task) for task in TASKS}}


def main(argv: list[str] | None = None) -> None:
    """``python -m promptlab.toy.pretrain_clip``: pretrains toy-clip and writes its weights and report."""
    parser = argparse.ArgumentParser(description="Pretrain the tiny CLIP on the toy world.")
    parser.add_argument("--data", default="toy")
    parser.add_argument("--out", default="promptlab/weights/toy-clip.safetensors")
    parser.add_argument("--report", default="benchmarks/pretraining_clip.json")
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    report = pretrain(data, out, args.steps, args.batch_size, args.lr, args.warmup, args.seed)
    report |= evaluate(FrozenCLIP("toy-clip", pretrained=None, weights_path=str(out)), data)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
