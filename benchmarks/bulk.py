"""Bulk classification: ``promptlab classify`` locally against ``--engine ray`` on this machine.

Each run is a ``promptlab classify`` process writing a CSV; the table gives images per second, the peak
memory of the whole process tree (Ray's raylet, object store and actors included, polled every 0.2 s),
whether the two CSVs are identical, and, from the ray engine's per-actor rate, the throughput N nodes
would reach if each added its actors' rate (Ray Data's own scheduling overhead aside).

    python benchmarks/bulk.py            # 20,000 toy images (toy-clip) and 2,000 (ViT-B-16, random)
    python benchmarks/bulk.py --quick    # 600 toy images
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.deploy import TOY_CLASSES
from benchmarks.provenance import current_commit
from promptlab.export import export_classifier
from promptlab.methods import ZeroShotCLIP

OUT = Path(__file__).parent / "bulk.json"
BACKBONES = {"toy-clip": ("toy-clip", "promptlab", 20_000), "ViT-B-16 (random)": ("ViT-B-16", None, 2_000)}


def image_list(data_root: Path, n: int, out: Path) -> Path:
    """A folder of ``n`` links to the toy world's test images (repeated), as a user's folder would be."""
    test = json.loads((data_root / "toy" / "splits" / "mixed.json").read_text())["test"]
    paths = [data_root / "toy" / "images" / entry[0] for entry in test]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (out / f"{i:06d}.png").symlink_to(paths[i % len(paths)].resolve())
    return out


def run_classify(classifier: Path, images: Path, output: Path, engine: str, concurrency: int | None) -> dict:
    """One ``promptlab classify`` process: seconds, peak memory of its process tree, rows written."""
    command = [sys.executable, "-m", "promptlab", "classify", "--classifier", str(classifier), str(images)]
    command += ["-o", str(output), "--no_progress", "--engine", engine, "--batch_size", "64"]
    command += ["--concurrency", str(concurrency)] if concurrency else []
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    assert process.returncode == 0, f"{engine} classify failed ({process.returncode})"
    return {"seconds": seconds, "peak_mb": peak / 2**20, "rows": len(output.read_text().splitlines()) - 1}


def compare_csv(local: Path, ray: Path) -> dict:
    """Row-by-row agreement of two prediction CSVs: same paths, same top-1, largest probability gap."""
    rows = [list(csv.DictReader(path.open())) for path in (local, ray)]
    same_paths = [a["path"] for a in rows[0]] == [b["path"] for b in rows[1]]
    same_top1 = sum(a["label"] == b["label"] for a, b in zip(*rows, strict=True)) / max(len(rows[0]), 1)
    gap = max((abs(float(a["probability"]) - float(b["probability"])) for a, b in zip(*rows, strict=True)), default=0.0)
    return {
        "identical_csv": local.read_bytes() == ray.read_bytes(),
        "same_paths_in_order": same_paths,
        "same_top1": same_top1,
        "max_probability_difference": gap,
    }


def measure(name: str, data_root: Path, workdir: Path, n_images: int | None, concurrency: int) -> dict:
    """Local against ray on one backbone."""
    architecture, pretrained, default_n = BACKBONES[name]
    n = n_images or default_n
    classifier = export_classifier(
        ZeroShotCLIP(class_names=TOY_CLASSES, backbone=architecture, pretrained=pretrained),
        workdir / f"{architecture}.safetensors",
    )
    images = image_list(data_root, n, workdir / f"images-{architecture}")
    local = run_classify(classifier, images, workdir / "local.csv", "local", None)
    ray = run_classify(classifier, images, workdir / "ray.csv", "ray", concurrency)
    agreement = compare_csv(workdir / "local.csv", workdir / "ray.csv")
    per_actor = n / ray["seconds"] / concurrency
    return {
        "backbone": name,
        "images": n,
        "local_per_s": n / local["seconds"],
        "ray_per_s": n / ray["seconds"],
        "ray_vs_local": local["seconds"] / ray["seconds"],
        "local_peak_mb": local["peak_mb"],
        "ray_peak_mb": ray["peak_mb"],
        "actors": concurrency,
        "per_actor_per_s": per_actor,
        **agreement,
        "rows": ray["rows"],
        "projected_per_s": {str(nodes): per_actor * concurrency * nodes for nodes in (1, 4, 16)},
    }


def table(results: dict) -> str:
    """The Markdown table."""
    lines = [
        "| backbone | images | local img/s | ray img/s | ray / local | peak MB local / ray | identical CSV "
        "(same top-1, largest probability gap) | per actor img/s | projected img/s, 1 / 4 / 16 nodes of this size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        projected = " / ".join(f"{v:.4g}" for v in r["projected_per_s"].values())
        lines.append(
            f"| {r['backbone']} | {r['images']:,} | {r['local_per_s']:.4g} | {r['ray_per_s']:.4g} | "
            f"{r['ray_vs_local']:.2f}x | {r['local_peak_mb']:.0f} / {r['ray_peak_mb']:.0f} | {r['identical_csv']} "
            f"({r['same_top1']:.1%}, {r['max_probability_difference']:.1e}) | "
            f"{r['per_actor_per_s']:.4g} ({r['actors']} actors) | {projected} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=".", help="folder holding toy/")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--images", type=int, help="images per backbone instead of 20,000 / 2,000")
    parser.add_argument("--concurrency", type=int, default=2, help="ray actors (one per core here)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true", help="toy-clip, 600 images")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones, args.images = ["toy-clip"], args.images or 600
    results: dict = {"machine": f"{os.cpu_count()} CPU cores, no GPU", "commit": current_commit()}
    with tempfile.TemporaryDirectory() as folder:
        data_root = Path(args.data_root).resolve()
        results["runs"] = [measure(b, data_root, Path(folder), args.images, args.concurrency) for b in args.backbones]
    results["table"] = table(results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
