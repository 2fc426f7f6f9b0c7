"""Training speed, memory and inference throughput: promptlab against a reference-style CoOp loop.

The reference-style loop is written out here as the CoOp code runs: the image encoder on every
step, every class prompt through the text encoder at the full 77 tokens on every step, fp32. Ours
is promptlab's CoOp through Lightning: cached image features (built once, timed separately) and the
shared-prefix, EOT-truncated text encoder. Both share the data, backbone, initial context, optimiser,
schedule and epochs, and run one after the other in this process.

- training: per-epoch time (median) on ``tiny`` (clip-tiny, random), ``toy`` (toy-clip on the
  style-shifted toy task, also test accuracy of both over 3 seeds) and ``vit_b16`` (ViT-B-16, random
  weights, 100 classes x 16 shots; the reference epoch is extrapolated from timed steps);
- memory: peak resident memory of one CoOp step with 1000 classes on ViT-B-16 (random, CPU), each
  variant in a fresh process;
- inference: images/s of the exported classifier, of the bare open_clip image encoder and of
  reference-style CoOp inference (prompts re-encoded on every call) at 1000 classes.

    python benchmarks/speed.py            # about 20 minutes on 2 CPU cores
    python benchmarks/speed.py --quick    # seconds: the tiny model only (CI)
    python benchmarks/speed.py --sections memory inference   # rerun some, keep the others' results
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from promptlab.backbone import IMAGENET_CLASSNAMES, FrozenCLIP
from promptlab.data import FewShotDataModule
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.methods import CoOp
from promptlab.methods._schedule import warmup_cosine_factor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.provenance import current_commit

OUT = Path(__file__).parent / "speed.json"
TOY_COOP_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy" / "coop.yaml"
N_CTX = 16
SECTIONS = ["training", "memory", "inference"]
TRAINING_ROWS = ["synthetic", "toy", "vit_b16"]


def class_names(n: int) -> list[str]:
    """``n`` ImageNet class names spread over the 1000 (its two "crane"s and "missile"s made unique)."""
    names = [IMAGENET_CLASSNAMES[int(i * 1000 / n)].replace(" ", "_") for i in range(n)]
    return [name if name not in names[:i] else f"{name}_{i}" for i, name in enumerate(names)]


def synthetic_dataset(root: Path, n_classes: int, shots: int, size: int = 256) -> Path:
    """JPEGs of tinted noise, ``shots`` per class, and a CoOp split file listing them as training images."""
    rng = np.random.default_rng(0)
    names, train = class_names(n_classes), []
    for label, name in enumerate(names):
        tint = rng.integers(0, 255, 3)
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(shots):
            pixels = (0.5 * rng.integers(0, 255, (size, size, 3)) + 0.5 * tint).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=90)
            train.append([f"{name}/{i}.jpg", label, name])
    split = root / "split.json"
    split.write_text(json.dumps({"train": train, "val": [], "test": []}))
    return split


# -- the reference-style loop --------------------------------------------------------------------


class ReferenceCoOp(nn.Module):
    """CoOp as the reference code computes it: [SOT][ctx x 16][name.][EOT] padded to 77 tokens."""

    def __init__(self, clip: nn.Module, tokenize: Callable, names: list[str], ctx: torch.Tensor) -> None:
        super().__init__()
        self.clip = clip
        prompts = [" ".join(["X"] * N_CTX) + " " + name.replace("_", " ") + "." for name in names]
        self.register_buffer("token_ids", tokenize(prompts))  # (C, 77)
        with torch.no_grad():
            embedding = clip.token_embedding(self.token_ids)  # (C, 77, width)
        self.register_buffer("prefix", embedding[:, :1])  # SOT
        self.register_buffer("suffix", embedding[:, 1 + N_CTX :])  # name, ".", EOT, padding
        self.ctx = nn.Parameter(ctx.detach().clone())

    def text_features(self) -> torch.Tensor:
        clip, n = self.clip, self.token_ids.shape[0]
        x = torch.cat([self.prefix, self.ctx.expand(n, -1, -1), self.suffix], dim=1) + clip.positional_embedding
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        x = x[torch.arange(n), self.token_ids.argmax(dim=-1)] @ clip.text_projection
        return F.normalize(x, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            image_features = F.normalize(self.clip.encode_image(images), dim=-1)
        return self.clip.logit_scale.exp() * image_features @ self.text_features().T


def reference_fit(
    model: ReferenceCoOp, loader, epochs: int, hp, max_steps: int | None = None
) -> tuple[list[float], list[float]]:
    """Trains with the reference's SGD and warm-up + cosine schedule.

    Returns:
        per-step and per-epoch seconds (epochs only when they ran whole).
    """
    params = [model.ctx]
    optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: warmup_cosine_factor(e, epochs, hp.warmup_epochs, hp.warmup_lr / hp.lr)
    )
    steps, epoch_times = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels, _ in loader:
            step_start = time.perf_counter()
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - step_start)
            if max_steps is not None and len(steps) >= max_steps:
                return steps, epoch_times
        epoch_times.append(time.perf_counter() - start)
        schedule.step()
    return steps, epoch_times


@torch.no_grad()
def reference_accuracy(model: ReferenceCoOp, loader) -> float:
    text = model.text_features()
    correct = total = 0
    for images, labels, _ in loader:
        features = F.normalize(model.clip.encode_image(images), dim=-1)
        correct += int(((features @ text.T).argmax(-1) == labels).sum())
        total += len(labels)
    return correct / total


# -- ours ----------------------------------------------------------------------------------------


class EpochTimer(L.Callback):
    """Seconds before the first epoch (feature cache filled there) and of each training epoch."""

    def on_fit_start(self, trainer, module) -> None:
        self.fit_start, self.setup_s, self.epochs = time.perf_counter(), None, []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.epoch_start = time.perf_counter()
        if self.setup_s is None:
            self.setup_s = self.epoch_start - self.fit_start

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epochs.append(time.perf_counter() - self.epoch_start)


def build(backbone: str, pretrained: str | None, data: dict, seed: int) -> tuple[CoOp, FewShotDataModule]:
    datamodule = FewShotDataModule(batch_size=32, test_batch_size=128, num_workers=2, seed=seed, **data)
    torch.manual_seed(seed)
    model = CoOp(class_names=datamodule.class_names, backbone=backbone, pretrained=pretrained, n_ctx=N_CTX)
    model.connect_data(datamodule)
    return model, datamodule


def compare_training(name: str, backbone: str, pretrained, data: dict, epochs: int, ref_epochs: int | None,
                     ref_steps: int | None, seed: int, cache_dir: str) -> dict:  # fmt: skip
    """Ours (Lightning, cached features) and the reference-style loop on the same data and initial context."""
    model, datamodule = build(backbone, pretrained, data | {"cache_dir": cache_dir}, seed)
    names = model.class_names
    initial_ctx = model.ctx.detach().clone()
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, callbacks=[timer], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    result = {
        "task": name, "backbone": backbone, "classes": len(names), "train_images": len(datamodule.splits.train),
        "epochs": epochs, "seed": seed, "cache_views": datamodule.cache_views,
        "ours_cache_build_s": timer.setup_s, "ours_epoch_s": statistics.median(timer.epochs),
    }  # fmt: skip
    if datamodule.splits.test:
        result["ours_accuracy"] = trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"]

    backbone_ref = FrozenCLIP(backbone, pretrained)  # a fresh copy: nothing shared with our run
    reference = ReferenceCoOp(backbone_ref.model, backbone_ref.tokenize, names, initial_ctx)
    torch.manual_seed(seed)
    loader = datamodule._loader(datamodule.splits.train, train=True)
    steps, epoch_times = reference_fit(reference, loader, ref_epochs or 1, model.hparams, ref_steps)
    steps_per_epoch = len(loader)
    if epoch_times:
        result["reference_epoch_s"] = statistics.median(epoch_times)
    else:  # too slow to run whole: timed steps (the first is warm-up) times steps per epoch
        result["reference_epoch_s"] = statistics.median(steps[1:] or steps) * steps_per_epoch
        result["reference_epoch_extrapolated_from_steps"] = len(steps[1:] or steps)
    if datamodule.splits.test and ref_epochs == epochs:
        result["reference_accuracy"] = reference_accuracy(reference, datamodule._loader(datamodule.splits.test, False))
    result["speedup_per_epoch"] = result["reference_epoch_s"] / result["ours_epoch_s"]
    print(json.dumps(result), flush=True)
    return result


# -- memory: one CoOp step with many classes, each variant in a fresh process ----------------------


def peak_step_memory(variant: str, backbone: str, n_classes: int) -> dict:
    """Runs in a child process: resident memory before one training step and its peak during it."""
    torch.manual_seed(0)
    model = CoOp(class_names=class_names(n_classes), backbone=backbone, pretrained=None, n_ctx=N_CTX)
    size = model.preprocess.size
    images, labels = torch.randn(32, 3, size, size), torch.randint(n_classes, (32,))
    if variant == "reference":
        bb = model.backbone
        step_model = ReferenceCoOp(bb.model, bb.tokenize, model.class_names, model.ctx)
        batch = images
    else:
        model.backbone.set_text_checkpointing(variant == "ours_checkpointing")
        step_model = model
        batch = model.backbone.encode_image(images)  # what the feature cache holds
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    start = time.perf_counter()
    loss = F.cross_entropy(step_model(batch), labels)
    loss.backward()
    return {"variant": variant, "classes": n_classes, "backbone": backbone, "rss_before_mb": before,
            "step_peak_mb": _status_mb("VmHWM") - before, "step_s": time.perf_counter() - start}  # fmt: skip


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) / 1024


def json_from_child(command: list[str], what: str) -> dict:
    """Runs a measurement in a fresh process; returns (and prints) the JSON of its last output line."""
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"The {what} measurement failed:\n{finished.stderr[-2000:]}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def memory_in_subprocess(variant: str, backbone: str, n_classes: int) -> dict:
    command = [sys.executable, __file__, "--_memory", variant, backbone, str(n_classes)]
    return json_from_child(command, f"{variant} memory")


# -- inference -------------------------------------------------------------------------------------


@torch.no_grad()
def inference(backbone: str, pretrained, n_classes: int, batch: int, repeats: int, workdir: Path) -> dict:
    """Images/s of the bare image encoder, the exported classifier and reference-style CoOp inference."""
    torch.manual_seed(0)
    model = CoOp(class_names=class_names(n_classes), backbone=backbone, pretrained=pretrained, n_ctx=N_CTX)
    path = export_classifier(model, workdir / f"{backbone}.safetensors", embed_backbone=pretrained is None)
    classifier = Classifier.load(path, device="cpu")
    bare = classifier.backbone.model  # the same weights, called as open_clip does
    size = model.preprocess.size
    images = torch.randn(batch, 3, size, size)
    reference = ReferenceCoOp(bare, model.backbone.tokenize, model.class_names, model.ctx).eval()

    def rate(function, n: int) -> float:
        function()  # warm-up
        times = []
        for _ in range(n):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return batch / statistics.median(times)

    result = {
        "backbone": backbone, "classes": n_classes, "batch": batch,
        "open_clip_encode_image_per_s": rate(lambda: bare.encode_image(images), repeats),
        "classifier_per_s": rate(lambda: classifier.predict_proba(images, batch_size=batch), repeats),
        "reference_coop_per_s": rate(lambda: reference(images), max(1, repeats // 3)),
    }  # fmt: skip
    result["classifier_vs_open_clip"] = result["classifier_per_s"] / result["open_clip_encode_image_per_s"]
    result["classifier_vs_reference_coop"] = result["classifier_per_s"] / result["reference_coop_per_s"]
    print(json.dumps(result), flush=True)
    return result


# -- report ----------------------------------------------------------------------------------------


def table(results: dict) -> str:
    lines = ["| task | backbone | classes | ours s/epoch | reference s/epoch | speed-up | cache build s | "
             "ours acc | reference acc |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["training"]:
        acc = [f"{100 * r[k]:.1f}" if k in r else "-" for k in ("ours_accuracy", "reference_accuracy")]
        extrapolated = "*" if "reference_epoch_extrapolated_from_steps" in r else ""
        lines.append(
            f"| {r['task']} (seed {r['seed']}) | {r['backbone']} | {r['classes']} | {r['ours_epoch_s']:.3g} | "
            f"{r['reference_epoch_s']:.3g}{extrapolated} | {r['speedup_per_epoch']:.1f}x | "
            f"{r['ours_cache_build_s']:.3g} | {acc[0]} | {acc[1]} |"
        )
    lines += ["", "| memory, one step | classes | peak over baseline MB | step s |", "|---|---|---|---|"]
    for r in results["memory"]:
        variant = f"{r['variant']} ({r['backbone']})"
        lines.append(f"| {variant} | {r['classes']} | {r['step_peak_mb']:.0f} | {r['step_s']:.3g} |")
    lines += ["", "| inference | classes | open_clip img/s | classifier img/s | reference CoOp img/s | "
              "classifier / open_clip | classifier / reference |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["inference"]:
        lines.append(
            f"| {r['backbone']} | {r['classes']} | {r['open_clip_encode_image_per_s']:.4g} | "
            f"{r['classifier_per_s']:.4g} | {r['reference_coop_per_s']:.3g} | {r['classifier_vs_open_clip']:.3f} | "
            f"{r['classifier_vs_reference_coop']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, a few steps (CI)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS, help="what to (re)run")
    parser.add_argument(
        "--training_rows", nargs="+", choices=TRAINING_ROWS, default=TRAINING_ROWS, help="training rows to (re)run"
    )
    parser.add_argument("--_memory", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory:
        variant, backbone, n_classes = args._memory
        print(json.dumps(peak_step_memory(variant, backbone, int(n_classes))))
        return

    results = {"training": [], "memory": [], "inference": []}
    if args.sections != SECTIONS and args.out.is_file():  # keep the sections not rerun
        results |= json.loads(args.out.read_text())
    commit = current_commit()
    results["machine"] = {"platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}  # fmt: skip

    def record(section: str, result: dict) -> None:  # saved as it comes: a late failure keeps the rest
        results[section].append(result | {"commit": commit})
        args.out.write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "training" in args.sections:
            rerun = {"synthetic": ("synthetic", "clip-tiny"), "toy": ("toy style_shift", "toy-clip"),
                     "vit_b16": ("synthetic", "ViT-B-16")}  # fmt: skip
            redone = {rerun[row] for row in args.training_rows}
            results["training"] = [r for r in results["training"] if (r["task"], r["backbone"]) not in redone]
            n, shots = (10, 4) if args.quick else (100, 16)
            split = synthetic_dataset(tmp / "synthetic", n, shots, size=64 if args.quick else 256)
            synthetic = {"root": str(split.parent), "dataset": "split", "split_file": str(split), "shots": shots}
            cache = str(tmp / "cache")
            epochs = 2 if args.quick else 3
            if "synthetic" in args.training_rows:
                record(
                    "training",
                    compare_training("synthetic", "clip-tiny", None, synthetic, epochs, epochs, None, 1, cache),
                )
            if not args.quick and "toy" in args.training_rows:
                # The toy config's crops; both loops share one context (the reference loop has no CSC).
                crop_scale = tuple(OmegaConf.load(TOY_COOP_CONFIG).data.crop_scale)
                toy = {"root": ".", "dataset": "toy_style_shift", "shots": 16, "crop_scale": crop_scale}
                for seed in (1, 2, 3):
                    record("training", compare_training("toy style_shift", "toy-clip", "promptlab", toy, 200, 200,
                                                        None, seed, cache))  # fmt: skip
            if not args.quick and "vit_b16" in args.training_rows:
                vit = synthetic | {"cache_views": 1}  # per-epoch time does not depend on the views cached
                record("training", compare_training("synthetic", "ViT-B-16", None, vit, 2, None, 4, 1, cache))
        if "memory" in args.sections:
            results["memory"] = []
            backbone, classes = ("clip-tiny", 100) if args.quick else ("ViT-B-16", 1000)
            for variant in ("reference", "ours", "ours_checkpointing"):
                record("memory", memory_in_subprocess(variant, backbone, classes))
        if "inference" in args.sections:
            results["inference"] = []
            setups = [("clip-tiny", None, 100, 32, 3)]
            if not args.quick:
                setups += [("toy-clip", "promptlab", 1000, 256, 9), ("ViT-B-16", None, 1000, 32, 3)]
            for setup in setups:
                record("inference", inference(*setup, tmp))
    text = table(results)
    print(text)
    args.out.write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
