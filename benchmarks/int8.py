"""int8 ONNX classifiers on CPUs: throughput against float32, top-1 agreement, and accuracy per head kind.

Throughput: zero-shot classifiers of toy-clip and ViT-B-16 (random weights: speed does not depend on
them) exported to float32 ONNX, then quantized (dynamic, and static on 64 toy training images); the
model alone on preprocessed batches, median of repeated rounds. Accuracy: each method of the toy
protocol trained on ``shapes`` (16 shots, seed 1, runs reused from ``--runs``), exported from its run
(``promptlab export --quantize int8`` does the same), on the task's 240 test images.

    python benchmarks/int8.py               # about 10 minutes on 2 CPU cores, plus training missing runs
    python benchmarks/int8.py --quick       # toy-clip, two methods, one repeat
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.deploy import TOY_CLASSES, median_rates
from benchmarks.provenance import current_commit
from promptlab.cli.benchmark_runs import ProtocolRunner
from promptlab.cli.protocol import load_protocol
from promptlab.deploy.onnx_quantize import quantize_classifier
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.export import export_classifier, export_run
from promptlab.methods import ZeroShotCLIP

OUT = Path(__file__).parent / "int8.json"
BACKBONES = {"toy-clip": ("toy-clip", "promptlab", 256, 64), "ViT-B-16 (random)": ("ViT-B-16", None, 64, 32)}


def toy_split(data_root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """The shapes task's images of one split and their labels."""
    entries = json.loads((data_root / "toy" / "splits" / "shapes.json").read_text())[split]
    return [data_root / "toy" / "images" / e[0] for e in entries], np.array([e[1] for e in entries])


def arrays(classifier: OnnxClassifier, paths: list[Path]) -> np.ndarray:
    """The images at ``paths``, preprocessed for ``classifier``: (N, 3, H, W) float32."""
    return np.stack([classifier.to_array(Image.open(p)) for p in paths])


def top1(classifier: OnnxClassifier, images: np.ndarray) -> np.ndarray:
    """Top classes in batches of 64, as ``classify`` and the agreement measure them: a dynamic int8
    graph scales activations per batch, so its answers depend (slightly) on the batch."""
    return np.concatenate([classifier.probabilities(images[i : i + 64]).argmax(1) for i in range(0, len(images), 64)])


def throughput(name: str, data_root: Path, workdir: Path, repeats: int) -> dict:
    """float32 against dynamic and static int8, the model alone, on one backbone."""
    architecture, pretrained, n_images, batch_size = BACKBONES[name]
    model = ZeroShotCLIP(class_names=TOY_CLASSES, backbone=architecture, pretrained=pretrained)
    fp32 = export_classifier(model, workdir / f"{architecture}.onnx")
    test, _ = toy_split(data_root, "test")
    train, _ = toy_split(data_root, "train")
    runtime = OnnxClassifier(fp32)
    images = arrays(runtime, [test[i % len(test)] for i in range(n_images)])
    calibration = arrays(runtime, train[:64])
    files = {"float32": fp32}
    records = {}
    for mode in ("dynamic", "static"):
        files[mode] = workdir / f"{architecture}-{mode}.onnx"
        records[mode] = quantize_classifier(fp32, files[mode], mode, images, "toy test images", calibration)
    runtimes = {key: OnnxClassifier(path) for key, path in files.items()}
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

    def run(runtime: OnnxClassifier) -> Callable[[], object]:
        return lambda: [runtime.probabilities(batch) for batch in batches]

    rates = median_rates({key: run(r) for key, r in runtimes.items()}, len(images), repeats)
    return {
        "backbone": name,
        "images": len(images),
        "batch_size": batch_size,
        "float32_per_s": rates["float32"],
        **{f"int8_{mode}_per_s": rates[mode] for mode in ("dynamic", "static")},
        **{f"int8_{mode}_speedup": rates[mode] / rates["float32"] for mode in ("dynamic", "static")},
        **{f"int8_{mode}_agreement": records[mode]["top1_agreement"] for mode in ("dynamic", "static")},
        "float32_mb": fp32.stat().st_size / 1e6,
        "int8_dynamic_mb": files["dynamic"].stat().st_size / 1e6,
    }


def per_head_kind(data_root: Path, runs: Path, workdir: Path, methods: list[str] | None) -> list[dict]:
    """Each toy method's run (trained when missing) exported as float32 and int8: accuracy and agreement."""
    protocol = load_protocol("protocols/toy.yaml")
    protocol.methods = {k: v for k, v in protocol.methods.items() if not methods or k in methods}
    protocol.datasets, protocol.shots, protocol.seeds, protocol.data_root = ["toy_shapes"], [16], [1], str(data_root)
    protocol.base_to_new = []
    results = ProtocolRunner(protocol, runs).run_all()
    test, labels = toy_split(data_root, "test")
    train, _ = toy_split(data_root, "train")
    rows = []
    for result in results:
        fp32 = export_run(result["run"], workdir / "run.onnx")
        runtime = OnnxClassifier(fp32)
        images, calibration = arrays(runtime, test), arrays(runtime, train[:64])
        row = {"method": result["method"], "head": runtime.meta["head_kind"], "images": len(test)}
        row["float32_accuracy"] = float((top1(runtime, images) == labels).mean())
        for mode in ("dynamic", "static"):
            quantized = workdir / f"run-{mode}.onnx"
            record = quantize_classifier(fp32, quantized, mode, images, "toy test images", calibration)
            predicted = top1(OnnxClassifier(quantized), images)
            row[f"int8_{mode}_accuracy"] = float((predicted == labels).mean())
            row[f"int8_{mode}_agreement"] = record["top1_agreement"]
        rows.append(row)
    return rows


def table(results: dict) -> str:
    """The throughput and per-head tables, Markdown."""
    lines = [
        "| backbone | images, batch | float32 img/s | int8 dynamic img/s | speedup | int8 static img/s | speedup | "
        "agreement dynamic / static | file MB float32 / int8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['backbone']} | {r['images']}, {r['batch_size']} | {r['float32_per_s']:.4g} | "
            f"{r['int8_dynamic_per_s']:.4g} | {r['int8_dynamic_speedup']:.2f}x | {r['int8_static_per_s']:.4g} | "
            f"{r['int8_static_speedup']:.2f}x | {r['int8_dynamic_agreement']:.1%} / {r['int8_static_agreement']:.1%} | "
            f"{r['float32_mb']:.1f} / {r['int8_dynamic_mb']:.1f} |"
        )
    lines += [
        "",
        "| method | head kind | float32 accuracy | int8 dynamic: accuracy, agreement "
        "| int8 static: accuracy, agreement |",
        "|---|---|---|---|---|",
    ]
    for r in results["heads"]:
        lines.append(
            f"| {r['method']} | {r['head']} | {r['float32_accuracy']:.1%} | "
            f"{r['int8_dynamic_accuracy']:.1%}, {r['int8_dynamic_agreement']:.1%} | "
            f"{r['int8_static_accuracy']:.1%}, {r['int8_static_agreement']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=".", help="folder holding toy/")
    parser.add_argument("--runs", default="runs/toy", help="the toy protocol's runs (reused; missing ones trained)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", help="only these methods of the toy protocol")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true", help="toy-clip, CoOp and the linear probe, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.repeats = args.methods or ["CoOp", "Linear probe"], 1
    data_root = Path(args.data_root).resolve()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, onnxruntime {onnxruntime.__version__}",
        "commit": current_commit(),
    }
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        backbones = ["toy-clip"] if args.quick else list(BACKBONES)
        results["throughput"] = [throughput(b, data_root, workdir, args.repeats) for b in backbones]
        results["heads"] = per_head_kind(data_root, Path(args.runs), workdir, args.methods)
    results["table"] = table(results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
