"""Load test of ``promptlab serve``: the real server on loopback against in-process batched prediction.

The server (LitServe, dynamic batching: ``--max_batch_size 16 --batch_timeout 0.002``, the defaults) serves a
toy-clip zero-shot classifier (and a random-weight ViT-B-16 one with ``--vit``). Clients post the
same toy PNG files as multipart uploads: 1, 4 and 16 concurrent clients, ``--requests`` requests in
all at each level (split between the clients, so the run stops by itself). Reports throughput,
p50 / p99 latency and errors per level, the server's memory (resident set of its process tree)
after warm-up and after the run, and the same images through ``Classifier.predict_proba`` in one
process (decoded from the same bytes, batches of 16), as ratios measured in the same run.

    python benchmarks/serving.py           # toy-clip, 256 requests per level (about 2 minutes)
    python benchmarks/serving.py --vit     # also ViT-B-16 with random weights (64 requests per level)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.deploy import toy_images
from promptlab.data.images import decode_image_bytes
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.methods import ZeroShotCLIP
from promptlab.toy.render import SHAPES

OUT = Path(__file__).parent / "serving.json"
TOY_CLASSES = list(SHAPES)
CONCURRENCY = (1, 4, 16)
MAX_BATCH = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children (LitServe's API and inference workers)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def start_server(classifier_file: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "promptlab", "serve", "--classifier", str(classifier_file), "--port", str(port),
        "--max_batch_size", str(MAX_BATCH), "--batch_timeout", "0.002", "--accelerator", "cpu",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).text == "ok":
                return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not start within 180 s")


def load(url: str, images: list[bytes], clients: int, total: int) -> dict:
    """``clients`` threads, each posting ``total // clients`` images one after another."""
    per_client = total // clients

    def client(index: int) -> list[tuple[float, int]]:
        session, results = requests.Session(), []
        for i in range(per_client):
            image = images[(index * per_client + i) % len(images)]
            start = time.perf_counter()
            response = session.post(f"{url}/predict", files={"image": ("x.png", image, "image/png")}, timeout=120)
            results.append((time.perf_counter() - start, response.status_code))
        return results

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(client, range(clients)) for r in part]
    wall = time.perf_counter() - start
    latencies = sorted(latency for latency, _ in results)
    return {
        "clients": clients,
        "requests": len(results),
        "throughput_per_s": len(results) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": sum(status != 200 for _, status in results),
    }


def in_process_rate(classifier: Classifier, images: list[bytes], total: int) -> float:
    """Images/s of decode + preprocess + batched ``predict_proba`` in this process (median of 3)."""
    items = [images[i % len(images)] for i in range(total)]

    def run() -> None:
        for i in range(0, total, MAX_BATCH):
            decoded = [decode_image_bytes(data, "x.png")[0] for data in items[i : i + MAX_BATCH]]
            classifier.predict_proba(decoded, batch_size=MAX_BATCH)

    run()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return total / statistics.median(times)


def benchmark(name: str, architecture: str, pretrained: str | None, images: list[bytes], total: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        model = ZeroShotCLIP(class_names=TOY_CLASSES, backbone=architecture, pretrained=pretrained)
        classifier_file = export_classifier(model, Path(folder) / "c.safetensors")
        in_process = in_process_rate(Classifier.load(classifier_file, device="cpu"), images, total)
        process, url = start_server(classifier_file)
        try:
            load(url, images, 4, min(total, 32))  # warm-up
            memory_warm = tree_rss_mb(process.pid)
            levels = [load(url, images, clients, total) for clients in CONCURRENCY]
            memory_after = tree_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    for level in levels:
        level["vs_in_process"] = level["throughput_per_s"] / in_process
    return {
        "backbone": name,
        "in_process_per_s": in_process,
        "levels": levels,
        "memory_after_warmup_mb": memory_warm,
        "memory_after_run_mb": memory_after,
        "memory_growth": memory_after / memory_warm - 1,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| backbone | clients | requests | served img/s | p50 ms | p99 ms | errors | served / in-process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for level in r["levels"]:
            lines.append(
                f"| {r['backbone']} | {level['clients']} | {level['requests']} | {level['throughput_per_s']:.4g} | "
                f"{level['p50_ms']:.1f} | {level['p99_ms']:.1f} | {level['errors']} | {level['vs_in_process']:.2f}x |"
            )
    lines += ["", "| backbone | in-process img/s | server memory after warm-up | after the run | growth |"]
    lines += ["|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['backbone']} | {r['in_process_per_s']:.4g} | {r['memory_after_warmup_mb']:.0f} MB | "
            f"{r['memory_after_run_mb']:.0f} MB | {r['memory_growth']:+.1%} |"
        )
    return "\n".join(lines)


def toy_pngs(data_root: Path, n: int = 64) -> list[bytes]:
    return [Path(path).read_bytes() for path in toy_images(data_root, n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256, help="requests per concurrency level (toy-clip)")
    parser.add_argument("--vit", action="store_true", help="also ViT-B-16 with random weights")
    parser.add_argument("--data_root", default=".", help="folder holding toy/ (generated when missing)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    data_root = Path(args.data_root).resolve()
    if not (data_root / "toy" / "splits").is_dir():
        from promptlab.toy.world import generate

        generate(data_root / "toy", pretrain_images=0)
    images = toy_pngs(data_root)
    results = [benchmark("toy-clip", "toy-clip", "promptlab", images, args.requests)]
    if args.vit:
        big = []
        for data in images[:16]:  # toy images are 32 px: give ViT-B-16 photo-sized uploads
            buffer = io.BytesIO()
            decode_image_bytes(data, "x.png")[0].resize((320, 320)).save(buffer, format="PNG")
            big.append(buffer.getvalue())
        results.append(benchmark("ViT-B-16 (random)", "ViT-B-16", None, big, 64))
    text = table(results)
    print(text)
    machine = f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, no GPU"
    Path(args.out).write_text(json.dumps({"machine": machine, "results": results, "table": text}, indent=2))


if __name__ == "__main__":
    main()
