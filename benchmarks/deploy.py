"""Deployment throughput and ONNX fidelity: ``promptlab classify``, the Python API and the ONNX runtime
against bare open_clip, in one process and one run.

For each backbone, on the same image files and at the same batch size (medians of ``--repeats``
rounds, each round timing every variant once in turn):

- ``open_clip pipeline``: what a user writes with open_clip alone: open each file with PIL,
  preprocess (the same test transform), ``encode_image`` per batch, in this process;
- ``encode_image only``: the model alone on already preprocessed batches (the ceiling);
- ``Classifier.predict_proba(paths)``: the Python API (decoding in this process);
- ``classify``: ``promptlab classify``'s engine (:func:`promptlab.deploy.classify.classify_files`) with its
  default decoding workers (none on 2 CPU cores) and with 2 worker processes, predictions streamed
  to a CSV file;
- ``torch classifier`` and ``ONNX runtime``: the same preprocessed batches through the classifier
  file with torch and through its ONNX export with onnxruntime (model only, CPU).

Then the ONNX fidelity of every head kind: the largest difference between the ONNX runtime's and the
torch classifier's probabilities on the toy test images, for each method's export (clip-tiny, random
weights, trained parameters perturbed as in the tests).

    python benchmarks/deploy.py              # toy-clip, clip-tiny and ViT-B-16 (random); about 8 minutes
    python benchmarks/deploy.py --quick      # toy-clip only, 128 images
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.builders builds each head kind
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.classify import classify_files
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.deploy.prediction_files import PredictionWriter
from promptlab.export import export_classifier
from promptlab.methods import ZeroShotCLIP
from promptlab.toy.render import SHAPES

OUT = Path(__file__).parent / "deploy.json"
TOY_CLASSES = list(SHAPES)
BACKBONES = {  # name: (architecture, pretrained tag, images, batch size)
    "toy-clip": ("toy-clip", "promptlab", 512, 64),
    "clip-tiny": ("clip-tiny", None, 512, 64),
    "ViT-B-16 (random)": ("ViT-B-16", None, 64, 32),
}


def median_rates(functions: dict[str, Callable[[], object]], n_images: int, repeats: int) -> dict[str, float]:
    """Images per second of each function: one warm-up call each, then ``repeats`` rounds that call
    every function once in turn (so a slow spell of the shared machine hits all alike); the median."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: n_images / statistics.median(values) for name, values in times.items()}


def toy_images(data_root: Path, n: int) -> list[str]:
    """``n`` toy test images (repeated when the split has fewer)."""
    test = json.loads((data_root / "toy" / "splits" / "mixed.json").read_text())["test"]
    paths = [str(data_root / "toy" / "images" / path) for path, _, _ in test]
    return [paths[i % len(paths)] for i in range(n)]


def throughput(name: str, data_root: Path, workdir: Path, repeats: int, n_images: int | None = None) -> dict:
    architecture, pretrained, default_n, batch_size = BACKBONES[name]
    paths = toy_images(data_root, n_images or default_n)
    model = ZeroShotCLIP(class_names=TOY_CLASSES, backbone=architecture, pretrained=pretrained)
    torch_file = export_classifier(model, workdir / f"{architecture}.safetensors")
    onnx_file = export_classifier(model, workdir / f"{architecture}.onnx")
    classifier, runtime = Classifier.load(torch_file, device="cpu"), OnnxClassifier(onnx_file)
    bare, transform = classifier.backbone.model, classifier.transform  # open_clip's model, the same weights
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    tensors = [torch.stack([transform(Image.open(p).convert("RGB")) for p in batch]) for batch in batches]

    @torch.no_grad()
    def open_clip_pipeline() -> None:
        for batch in batches:
            bare.encode_image(torch.stack([transform(Image.open(p).convert("RGB")) for p in batch]))

    @torch.no_grad()
    def encode_only() -> None:
        for batch in tensors:
            bare.encode_image(batch)

    def classify(workers: int | None) -> Callable[[], None]:
        def run() -> None:
            with PredictionWriter(workdir / "predictions.csv") as writer:
                for result in classify_files(classifier, paths, batch_size, workers, progress=False):
                    writer.write(*result)

        return run

    arrays = [batch.numpy() for batch in tensors]
    n = len(paths)
    rates = median_rates(
        {
            "open_clip_pipeline_per_s": open_clip_pipeline,
            "encode_image_only_per_s": encode_only,
            "predict_proba_paths_per_s": lambda: classifier.predict_proba(paths, batch_size),
            "classify_per_s": classify(None),
            "classify_2_workers_per_s": classify(2),
            "torch_classifier_per_s": lambda: [classifier.probabilities(t) for t in tensors],
            "onnx_runtime_per_s": lambda: [runtime.probabilities(a) for a in arrays],
            "onnx_predict_proba_paths_per_s": lambda: runtime.predict_proba(paths, batch_size),
        },
        n,
        repeats,
    )
    result = {"backbone": name, "images": n, "batch_size": batch_size, **rates}
    result["classify_vs_open_clip_pipeline"] = result["classify_per_s"] / result["open_clip_pipeline_per_s"]
    result["classify_vs_encode_image_only"] = result["classify_per_s"] / result["encode_image_only_per_s"]
    result["onnx_vs_torch_classifier"] = result["onnx_runtime_per_s"] / result["torch_classifier_per_s"]
    probabilities = np.concatenate([runtime.probabilities(a) for a in arrays])
    expected = torch.cat([classifier.probabilities(t) for t in tensors]).numpy()
    result["onnx_max_abs_difference"] = float(np.abs(probabilities - expected).max())
    return result


def head_fidelity(data_root: Path, workdir: Path) -> list[dict]:
    """ONNX against torch probabilities for each method's export (every head kind)."""
    from tests.builders import BUILDERS

    rows = []
    for method, (build, head_type) in BUILDERS.items():
        torch.manual_seed(0)
        model = build().eval()
        classifier = Classifier.load(export_classifier(model, workdir / f"{method}.safetensors"), device="cpu")
        runtime = OnnxClassifier(export_classifier(model, workdir / f"{method}.onnx"))
        paths = toy_images(data_root, 240)
        expected = classifier.predict_proba(paths).numpy()
        got = runtime.predict_proba(paths)
        rows.append(
            {
                "method": method,
                "head": head_type.kind,
                "images": len(paths),
                "max_abs_difference": float(np.abs(got - expected).max()),
                "same_top1": bool((got.argmax(-1) == expected.argmax(-1)).all()),
            }
        )
    return rows


def table(results: dict) -> str:
    lines = [
        "| backbone | images, batch | open_clip pipeline | encode_image only | Classifier.predict_proba(paths) | "
        "classify | classify, 2 workers | classify / open_clip pipeline | classify / encode_image only |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['backbone']} | {r['images']}, {r['batch_size']} | {r['open_clip_pipeline_per_s']:.4g} | "
            f"{r['encode_image_only_per_s']:.4g} | {r['predict_proba_paths_per_s']:.4g} | {r['classify_per_s']:.4g} | "
            f"{r['classify_2_workers_per_s']:.4g} | "
            f"{r['classify_vs_open_clip_pipeline']:.2f}x | {r['classify_vs_encode_image_only']:.2f}x |"
        )
    lines += [
        "",
        "| backbone | torch classifier (model only) | ONNX runtime (model only) | ONNX / torch | "
        "ONNX from files | max abs difference |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['backbone']} | {r['torch_classifier_per_s']:.4g} | {r['onnx_runtime_per_s']:.4g} | "
            f"{r['onnx_vs_torch_classifier']:.2f}x | {r['onnx_predict_proba_paths_per_s']:.4g} | "
            f"{r['onnx_max_abs_difference']:.1e} |"
        )
    lines += ["", "| method | head kind | max abs probability difference, ONNX vs torch | same top-1 |"]
    lines += ["|---|---|---|---|"]
    for r in results["heads"]:
        lines.append(f"| {r['method']} | {r['head']} | {r['max_abs_difference']:.1e} | {r['same_top1']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data_root", default=".", help="folder holding toy/ (generated when missing)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true", help="toy-clip only, 128 images, 1 repeat")
    args = parser.parse_args()
    data_root = Path(args.data_root).resolve()
    if not (data_root / "toy" / "splits").is_dir():
        from promptlab.toy.world import generate

        generate(data_root / "toy", pretrain_images=0)
    results = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        backbones, n = (["toy-clip"], 128) if args.quick else (args.backbones, None)
        repeats = 1 if args.quick else args.repeats
        results["throughput"] = [throughput(b, data_root, workdir, repeats, n) for b in backbones]
        results["heads"] = head_fidelity(data_root, workdir)
    results["table"] = table(results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
