"""Prompt-encoding time, truncated at the last EOT vs full 77 tokens, on a ViT-B-16 text tower.

Encodes CoOp prompts (16 context vectors + a real ImageNet class name) and template prompts
("a photo of a {}.") for 100 and 1000 classes with random weights, checks the outputs are identical,
and prints a table and writes JSON. Truncation sorts prompts by length and cuts each chunk at its own
last EOT.

    python benchmarks/text_encoder.py [--classes 100 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from promptlab.backbone import IMAGENET_CLASSNAMES, FrozenCLIP
from promptlab.methods._prompts import build_prompt_layout, coop_segments

PROMPT_KINDS = {
    "coop_ctx16": coop_segments(16, "end"),  # [SOS][16 context vectors][name.][EOS]
    "template": ["a photo of a {}."],  # zero-shot / initialised prompts
}


def measure(backbone: FrozenCLIP, n_classes: int, kind: str, repeats: int, chunk_size: int) -> dict:
    step = len(IMAGENET_CLASSNAMES) / n_classes
    names = [IMAGENET_CLASSNAMES[int(i * step)] for i in range(n_classes)]  # spread over ImageNet
    layout = build_prompt_layout(backbone, names, PROMPT_KINDS[kind])
    ids = torch.nn.functional.pad(layout.token_ids, (0, backbone.context_length - layout.token_ids.shape[1]))
    rows = torch.arange(n_classes).unsqueeze(1).expand_as(layout.context_slots)
    ctx = (torch.randn(layout.context_slots.shape[1], backbone.text_width) * 0.02).expand(n_classes, -1, -1)
    embeddings = backbone.embed_tokens(ids).index_put((rows, layout.context_slots), ctx)  # (C, 77, width)

    timings, outputs = {}, {}
    with torch.no_grad():
        for name, truncate in (("full", False), ("truncated", True)):
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                outputs[name] = backbone.encode_prompts(
                    embeddings, layout.pool_index, truncate=truncate, chunk_size=chunk_size
                )
                samples.append(time.perf_counter() - start)
            timings[name] = statistics.median(samples)
    return {
        "classes": n_classes,
        "prompt": kind,
        "tokens_full": backbone.context_length,
        "tokens_mean": float(layout.pool_index.float().mean() + 1),
        "tokens_max": int(layout.pool_index.max() + 1),
        "seconds_full": timings["full"],
        "seconds_truncated": timings["truncated"],
        "speedup": timings["full"] / timings["truncated"],
        "max_abs_difference": float((outputs["full"] - outputs["truncated"]).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--prompts", nargs="+", default=list(PROMPT_KINDS), choices=list(PROMPT_KINDS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk_size", type=int, default=100)
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--output", default=str(Path(__file__).with_name("text_encoder.json")))
    args = parser.parse_args()

    torch.manual_seed(0)
    backbone = FrozenCLIP(args.backbone, pretrained=None)
    results = [measure(backbone, n, kind, args.repeats, args.chunk_size) for kind in args.prompts for n in args.classes]
    print(
        f"{'prompt':>11} {'classes':>8} {'tokens mean/max/full':>21} {'full s':>8} {'trunc s':>8} {'speedup':>8} "
        f"{'max |diff|':>11}"
    )
    for r in results:
        tokens = f"{r['tokens_mean']:.1f}/{r['tokens_max']}/{r['tokens_full']}"
        print(
            f"{r['prompt']:>11} {r['classes']:>8} {tokens:>21} {r['seconds_full']:>8.2f} "
            f"{r['seconds_truncated']:>8.2f} {r['speedup']:>7.1f}x {r['max_abs_difference']:>11.1e}"
        )
    report = {
        "benchmark": "text_encoder",
        "backbone": f"{args.backbone} (random weights)",
        "repeats": args.repeats,
        "statistic": f"median seconds to encode all class prompts (no grad, chunks of {args.chunk_size})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
