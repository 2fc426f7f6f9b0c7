"""Training cost of CLIP-LoRA, MaPLe, CoCoOp and KgCoOp against stand-ins of their reference training loops.

Each row is one training step (forward, backward, optimiser step) at 100 classes on a random ViT-B/16,
at CLIP-LoRA's batch of 32 and the reference's batch for the others (MaPLe 4, CoCoOp 1, KgCoOp 128),
measured in its own process: seconds per step (median of the timed steps after one warm-up) and the
peak resident memory the step adds. The stand-ins compute what the reference code computes, the way it
computes it:

- CLIP-LoRA: every attention as explicit q, k, v and out ``nn.Linear`` layers with the low-rank branch
  and its dropout (``PlainMultiheadAttentionLoRA``), all C prompts at 77 tokens on every step;
- MaPLe: the same prompted image tower, the C prompts at 77 tokens with no shared prefix;
- CoCoOp: the image encoder on every step (no feature cache), each image's C prompts at 77 tokens;
- KgCoOp: the image encoder on every step, CoOp's prompts at 77 tokens.

promptlab's rows are the methods themselves: CoCoOp and KgCoOp on cached image features (built once,
not timed), every text side cut after its last EOT with shared prefixes encoded once.

Also the cost per image of classifying with CoCoOp, whose text tower runs for every image: images/s of
the module (ours and reference-style) and of exported ONNX files (CoCoOp against CoOp, on toy-clip).

    python benchmarks/method_costs.py            # about 20 minutes on 2 CPU cores
    python benchmarks/method_costs.py --quick    # seconds: clip-tiny, 10 classes (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.provenance import current_commit
from benchmarks.speed import _status_mb, class_names, json_from_child
from promptlab.methods import CLIPLoRA, CoCoOp, CoOp, KgCoOp, MaPLe

OUT = Path(__file__).parent / "method_costs.json"
BATCHES = {"clip_lora": 32, "maple": 4, "cocoop": 1, "kgcoop": 128}


class ReferenceLoRAAttention(nn.Module):
    """The reference's ``PlainMultiheadAttentionLoRA``: explicit projections, the LoRA branch on q, k, v."""

    def __init__(self, attn: nn.MultiheadAttention, rank: int = 2, alpha: float = 1.0, dropout: float = 0.25) -> None:
        super().__init__()
        width = attn.embed_dim
        self.heads = attn.num_heads
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(4))  # q, k, v, out
        with torch.no_grad():
            for i, linear in enumerate(self.linears[:3]):
                linear.weight.copy_(attn.in_proj_weight[i * width : (i + 1) * width])
                linear.bias.copy_(attn.in_proj_bias[i * width : (i + 1) * width])
            self.linears[3].weight.copy_(attn.out_proj.weight)
            self.linears[3].bias.copy_(attn.out_proj.bias)
        self.linears.requires_grad_(False)
        self.a = nn.ParameterList(nn.Parameter(torch.randn(rank, width) / math.sqrt(width)) for _ in range(3))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(width, rank)) for _ in range(3))
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(3))
        self.scaling = alpha / math.sqrt(rank)

    def forward(self, query, key, value, need_weights=False, attn_mask=None):
        projected = [
            linear(x) + self.scaling * drop(x) @ a.T @ b.T
            for linear, drop, a, b, x in zip(
                self.linears[:3], self.dropouts, self.a, self.b, (query, key, value), strict=True
            )
        ]
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in projected)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.linears[3](out.transpose(1, 2).flatten(2)), None


def _step_fn(method: str, variant: str, backbone: str, n_classes: int, batch: int):
    """(step function, description): one training step of ``method`` as ``variant`` (ours or reference) runs it."""
    torch.manual_seed(0)
    names = class_names(n_classes)
    common = {"class_names": names, "backbone": backbone, "pretrained": None}
    if method == "clip_lora":
        model = CLIPLoRA(**common).train()
        size = model.preprocess.size
        images, labels = torch.randn(batch, 3, size, size), torch.randint(n_classes, (batch,))
        if variant == "ours":
            optimizer = torch.optim.AdamW(model.lora_parameters, lr=2e-4, weight_decay=1e-2)

            def step():
                return model.training_losses(model.encode_images(images), labels)["loss"], optimizer

            return step
        clip = model.backbone.model  # the adapters' parameters stay unused: plain weights below
        for tower in (clip.visual.transformer, clip.transformer):
            for block in tower.resblocks:
                block.attn = ReferenceLoRAAttention(block.attn)
        clip.train()
        tokens = model.backbone.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in names])  # (C, 77)
        parameters = [p for n, p in clip.named_parameters() if ".a." in n or ".b." in n]
        optimizer = torch.optim.AdamW(parameters, lr=2e-4, weight_decay=1e-2)

        def step():
            text = F.normalize(clip.encode_text(tokens), dim=-1)
            image = F.normalize(clip.encode_image(images), dim=-1)
            return F.cross_entropy(100 * image @ text.T, labels), optimizer

        return step
    if method == "maple":
        model = MaPLe(**common, prompt_depth=2 if backbone == "clip-tiny" else 9).train()  # clip-tiny has 2 blocks
        size = model.preprocess.size
        images, labels = torch.randn(batch, 3, size, size), torch.randint(n_classes, (batch,))
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0035, momentum=0.9)
        if variant == "ours":

            def step():
                return model.training_losses(model.encode_images(images), labels)["loss"], optimizer

            return step
        tokens = model.backbone.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in names])  # (C, 77)
        full = model.backbone.embed_tokens(tokens).detach()
        eot = model.backbone.pool_index(tokens)

        def step():
            embeddings = full.clone()
            embeddings[:, 1 : 1 + model.n_ctx] = model.ctx
            text = model.backbone.encode_prompts(embeddings, eot, truncate=False)  # 77 tokens, no shared prefix
            logits = model.logits(model.encode_images(images), text)
            return F.cross_entropy(logits, labels), optimizer

        return step
    cls = CoCoOp if method == "cocoop" else KgCoOp
    model = cls(**common).train()
    size = model.preprocess.size
    images, labels = torch.randn(batch, 3, size, size), torch.randint(n_classes, (batch,))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.002, momentum=0.9)
    if variant == "ours":
        with torch.no_grad():
            cached = model.backbone.encode_image(images)  # what the feature cache holds

        def step():
            return model.training_losses(cached, labels)["loss"], optimizer

        return step
    prompt = f"{' '.join(['X'] * model.n_ctx)} {{}}."
    tokens = model.backbone.tokenize([prompt.format(n.replace("_", " ")) for n in names])  # (C, 77)
    full = model.backbone.embed_tokens(tokens).detach()
    eot = model.backbone.pool_index(tokens)

    def text_features(shift: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = full.clone()
        embeddings[:, 1 : 1 + model.n_ctx] = model.ctx if shift is None else model.ctx + shift
        return model.backbone.encode_prompts(embeddings, eot, truncate=False)

    def step():
        with torch.no_grad():
            image = model.backbone.encode_image(images)  # the reference runs the image encoder on every step
        if method == "cocoop":
            shifts = model.meta_net(image)
            scale = model.backbone.logit_scale
            logits = torch.stack([scale * f @ text_features(s).T for f, s in zip(image, shifts, strict=True)])
            return F.cross_entropy(logits, labels), optimizer
        text = text_features()
        kg = 1 - F.cosine_similarity(text, model.template_features, dim=-1).mean()
        return F.cross_entropy(model.logits(image, text), labels) + 8.0 * kg, optimizer

    return step


def measure_step(method: str, variant: str, backbone: str, n_classes: int, batch: int, steps: int) -> dict:
    """Runs in a child process: seconds per step and the peak memory the steps add."""
    step = _step_fn(method, variant, backbone, n_classes, batch)
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        loss, optimizer = step()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {"method": method, "variant": variant, "backbone": backbone, "classes": n_classes, "batch": batch,
            "step_s": statistics.median(times[1:]), "step_peak_mb": _status_mb("VmHWM") - before}  # fmt: skip


def in_subprocess(*args: str) -> dict:
    return json_from_child([sys.executable, __file__, "--_step", *args], " ".join(args))


@torch.no_grad()
def cocoop_inference(backbone: str, n_classes: int, batch: int, repeats: int) -> dict:
    """Images/s of CoCoOp classification: ours (prefix once, EOT cut) and reference-style (77 tokens per prompt)."""
    torch.manual_seed(0)
    names = class_names(n_classes)
    model = CoCoOp(class_names=names, backbone=backbone, pretrained=None).eval()
    size = model.preprocess.size
    images = torch.randn(batch, 3, size, size)
    features = model.backbone.encode_image(images)
    tokens = model.backbone.tokenize([f"X X X X {n.replace('_', ' ')}." for n in names])
    full, eot = model.backbone.embed_tokens(tokens), model.backbone.pool_index(tokens)

    def reference():
        rows = []
        for feature, shift in zip(features, model.meta_net(features), strict=True):
            embeddings = full.clone()
            embeddings[:, 1:5] = model.ctx + shift
            rows.append(feature @ model.backbone.encode_prompts(embeddings, eot, truncate=False).T)
        return torch.stack(rows)

    def rate(function) -> float:
        function()
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        return repeats * batch / (time.perf_counter() - start)

    ours = rate(lambda: model.conditional_logits(features))
    same = model.conditional_logits(features).softmax(-1) - (model.backbone.logit_scale * reference()).softmax(-1)
    return {"backbone": backbone, "classes": n_classes, "ours_images_per_s": ours,
            "reference_images_per_s": rate(reference), "max_probability_difference": float(same.abs().max()),
            "image_encoder_images_per_s": rate(lambda: model.backbone.encode_image(images))}  # fmt: skip


def onnx_per_image(repeats: int) -> dict:
    """Images/s of exported ONNX classifiers on toy-clip (8 classes): CoCoOp (text tower inside) against CoOp."""
    from promptlab.deploy.onnx_runtime import OnnxClassifier
    from promptlab.export import export_classifier

    names = [line.strip() for line in (Path(__file__).resolve().parent.parent / "toy" / "classnames.txt").open()]
    images = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for cls in (CoOp, CoCoOp):
            model = cls(class_names=names[:8], backbone="toy-clip", pretrained="promptlab").eval()
            runtime = OnnxClassifier(export_classifier(model, Path(folder) / f"{cls.key}.onnx"))
            runtime.predict_proba(images)
            start = time.perf_counter()
            for _ in range(repeats):
                runtime.predict_proba(images)
            rates[cls.key] = repeats * len(images) / (time.perf_counter() - start)
    return {"backbone": "toy-clip", "classes": 8, "coop_onnx_images_per_s": rates["coop"],
            "cocoop_onnx_images_per_s": rates["cocoop"]}  # fmt: skip


def markdown(results: dict) -> str:
    lines = [
        "| method | batch | reference stand-in s/step | promptlab s/step | speed-up "
        "| reference peak MB | promptlab peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = {(r["method"], r["variant"]): r for r in results["training"]}
    for method in dict.fromkeys(r["method"] for r in results["training"]):
        ref, ours = rows[(method, "reference")], rows[(method, "ours")]
        lines.append(
            f"| {method} | {ours['batch']} | {ref['step_s']:.2f} | {ours['step_s']:.2f} | "
            f"{ref['step_s'] / ours['step_s']:.1f}x | {ref['step_peak_mb']:.0f} | {ours['step_peak_mb']:.0f} |"
        )
    inference = results["cocoop_inference"]
    lines += [
        "",
        f"CoCoOp classification, {inference['backbone']}, {inference['classes']} classes: "
        f"{inference['ours_images_per_s']:.1f} images/s (text side, ours) against "
        f"{inference['reference_images_per_s']:.1f} (77 tokens per prompt); the image encoder alone runs "
        f"{inference['image_encoder_images_per_s']:.1f} images/s.",
    ]
    if "onnx" in results:
        onnx = results["onnx"]
        lines.append(
            f"ONNX on toy-clip, 8 classes: CoCoOp {onnx['cocoop_onnx_images_per_s']:.0f} images/s against CoOp "
            f"{onnx['coop_onnx_images_per_s']:.0f} (the text tower runs for every image)."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="clip-tiny, 10 classes, small batches")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--_step", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._step:
        method, variant, backbone, n_classes, batch, steps = args._step
        print(json.dumps(measure_step(method, variant, backbone, int(n_classes), int(batch), int(steps))))
        return
    backbone, n_classes, steps = ("clip-tiny", 10, 1) if args.quick else ("ViT-B-16", 100, 2)
    results: dict = {"commit": current_commit(), "torch_threads": torch.get_num_threads(), "training": []}
    for method, batch in BATCHES.items():
        batch = min(batch, 4) if args.quick else batch
        for variant in ("reference", "ours"):
            results["training"].append(in_subprocess(method, variant, backbone, str(n_classes), str(batch), str(steps)))
    results["cocoop_inference"] = cocoop_inference(backbone, n_classes, 4 if args.quick else 8, 1 if args.quick else 3)
    if not args.quick:
        results["onnx"] = onnx_per_image(repeats=20)
    args.out.write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
