"""Self-supervised pretraining of the tiny DINO (``toy-dino``) on the toy world's images, no labels.

DINO (Caron et al., 2021) at toy scale: a student and an EMA teacher ViT with projection heads, two
global and two local crops per image, the teacher's outputs centred and sharpened, cross-entropy from
teacher (global crops) to student (all other crops). Any hue, frequent grayscale, pixelation and noise
make colour and rendering style useless as shortcuts, so the features have to describe shape.

The ViT starts from toy-clip's image tower (``--from_scratch`` starts from random weights). From
scratch, DINO needs far more epochs than a 2-core budget allows: 3,000 steps (26 minutes) ended with
k-NN shape accuracy at chance (16%), below random weights (20%). Warm-started, 300 steps already beat
toy-clip's own features under the style shift. Seeded; writes fp16 safetensors and a JSON report.

    python -m promptlab.toy.pretrain_dino --data toy
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align
from tqdm import tqdm
from typing_extensions import override

from promptlab.toy.dino import build_toy_dino, load_toy_dino
from promptlab.toy.knn import knn_accuracy, normalise
from promptlab.toy.pretrain_clip import load_pairs, run_summary, save_fp16
from promptlab.toy.world import TASKS


class DINOHead(nn.Module):
    """MLP -> bottleneck -> L2 norm -> weight-normalised prototypes (as in the DINO code)."""

    def __init__(self, dim: int, out_dim: int = 1024, hidden: int = 512, bottleneck: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1)
        self.last.parametrizations.weight.original0.requires_grad = False

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def random_crops(
    images: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Batched RandomResizedCrop + flip + colour jitter (hue too) + grayscale, on (B, 3, H, W) in [0, 1].

    One ``roi_align`` call crops the whole batch: per-image Python transforms would dominate the step.
    """
    b, _, h, w = images.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    area = (scale[0] + (scale[1] - scale[0]) * rand(b)) * h * w
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b))
    crop_w, crop_h = (area * ratio).sqrt().clamp(max=w), (area / ratio).sqrt().clamp(max=h)
    x0, y0 = rand(b) * (w - crop_w), rand(b) * (h - crop_h)
    boxes = torch.stack([torch.arange(b, dtype=torch.float), x0, y0, x0 + crop_w, y0 + crop_h], dim=1)
    crops = roi_align(images, boxes, output_size=size, aligned=True)
    crops = torch.where(rand(b, 1, 1, 1) < 0.5, crops.flip(-1), crops)

    jitter = rand(b, 1, 1, 1) < 0.9
    brightness, contrast, saturation = (0.6 + 0.8 * rand(b, 1, 1, 1) for _ in range(3))
    gray = (crops * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    jittered = crops * brightness
    jittered = (jittered - jittered.mean((1, 2, 3), keepdim=True)) * contrast + jittered.mean((1, 2, 3), keepdim=True)
    jittered = gray + (jittered - gray) * saturation
    # Hue: rotate the chroma plane of YIQ by any angle. Milder jitter (+-90 degrees, 20% grayscale) left
    # colour a shortcut: k-NN named colours at 99% and shapes at 22%, below random weights.
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angle = (rand(b) - 0.5) * 2 * math.pi
    rotation = torch.zeros(b, 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = angle.cos(), -angle.sin()
    rotation[:, 2, 1], rotation[:, 2, 2] = angle.sin(), angle.cos()
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    jittered = torch.einsum("bij,bjhw->bihw", matrix, jittered)
    crops = torch.where(jitter, jittered, crops).clamp(0, 1)
    gray = (crops * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    crops = torch.where(rand(b, 1, 1, 1) < 0.5, gray.expand_as(crops), crops)
    # Rendering-style nuisances (pixelation, sensor noise), so that style is no shortcut either.
    pixelated = F.interpolate(F.avg_pool2d(crops, 4 if size >= 32 else 2), size=size, mode="nearest")
    crops = torch.where(rand(b, 1, 1, 1) < 0.25, pixelated, crops)
    noise = torch.randn(crops.shape, generator=generator) * 0.08
    crops = torch.where(rand(b, 1, 1, 1) < 0.25, (crops + noise).clamp(0, 1), crops)
    return normalise(crops)


def pretrain(
    data: Path,
    out: Path,
    steps: int,
    batch_size: int,
    lr: float,
    n_local: int,
    seed: int,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.1, 0.4),
    warm_start: bool = True,
) -> dict:
    """Pretrains toy-dino by self-distillation (DINO) on the toy world's images; returns its report."""
    torch.manual_seed(seed)
    images, _ = load_pairs(data)  # labels are never used
    student, teacher = build_toy_dino(warm_start), build_toy_dino()
    student_head, teacher_head = DINOHead(student.output_dim), DINOHead(student.output_dim)
    teacher.load_state_dict(student.state_dict())
    teacher_head.load_state_dict(student_head.state_dict())
    for p in [*teacher.parameters(), *teacher_head.parameters()]:
        p.requires_grad_(False)
    params = [p for p in [*student.parameters(), *student_head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.04)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    center = torch.zeros(1, 1024)
    generator = torch.Generator().manual_seed(seed)
    start, history = time.time(), []
    for step in (progress := tqdm(range(steps), desc="toy-dino pretraining")):
        batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)].float() / 255
        globals_ = [random_crops(batch, 32, global_scale, generator) for _ in range(2)]
        locals_ = [random_crops(batch, 16, local_scale, generator) for _ in range(n_local)]
        teacher_temp = 0.04 if step > steps // 5 else 0.02 + 0.02 * step / max(1, steps // 5)
        with torch.no_grad():
            teacher_out = [teacher_head(teacher(x)) for x in globals_]
            targets = [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher_out]
        student_out = [student_head(student(x)) for x in globals_ + locals_]
        loss, terms = torch.zeros(()), 0
        for ti, target in enumerate(targets):
            for si, output in enumerate(student_out):
                if si == ti:
                    continue
                loss = loss + torch.sum(-target * F.log_softmax(output / 0.1, dim=-1), dim=-1).mean()
                terms += 1
        loss = loss / terms
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 3.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            momentum = 1 - (1 - 0.996) * (math.cos(math.pi * step / steps) + 1) / 2
            for s, t in zip(
                [*student.parameters(), *student_head.parameters()],
                [*teacher.parameters(), *teacher_head.parameters()],
                strict=True,
            ):
                t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
            center = 0.9 * center + 0.1 * torch.cat(teacher_out).mean(0, keepdim=True)
        progress.set_postfix(loss=f"{loss.item():.3f}")
        history.append(loss.item())

    save_fp16(teacher, out)
    return {
        "steps": steps,
        "batch_size": batch_size,
        "local_crops": n_local,
        "lr": lr,
        "seed": seed,
        "warm_start": "toy-clip image tower" if warm_start else None,
        **run_summary(history, start),
    }


def compare_features(data: Path, dino_weights: Path) -> dict[str, float]:
    """k-NN shape accuracy of the tiny DINO's and the tiny CLIP's image features on each toy task."""
    from promptlab.backbone import FrozenCLIP

    dino, clip = load_toy_dino(dino_weights), FrozenCLIP("toy-clip", pretrained="promptlab")
    encoders = {"toy-dino": lambda x: dino(normalise(x)), "toy-clip": lambda x: clip.encode_image(normalise(x))}
    return {f"{name} / {task}": knn_accuracy(encode, data, task) for name, encode in encoders.items() for task in TASKS}


def main(argv: list[str] | None = None) -> None:
    """``python -m promptlab.toy.pretrain_dino``: pretrains toy-dino and writes its weights and report."""
    parser = argparse.ArgumentParser(description="Pretrain the tiny DINO on the toy world (no labels).")
    parser.add_argument("--data", default="toy")
    parser.add_argument("--out", default="promptlab/weights/toy-dino.safetensors")
    parser.add_argument("--report", default="benchmarks/pretraining_dino.json")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--local_crops", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from_scratch", action="store_true", help="random init instead of toy-clip's image tower")
    args = parser.parse_args(argv)
    report = pretrain(
        Path(args.data),
        Path(args.out),
        args.steps,
        args.batch_size,
        args.lr,
        args.local_crops,
        args.seed,
        warm_start=not args.from_scratch,
    )
    report["knn_shape_accuracy"] = compare_features(Path(args.data), Path(args.out))
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
