"""The feature cache under DDP: built once and shared across ranks, against once per rank; and the
``--data.engine ray`` path against the local one.

Two gloo processes on this machine (one thread each) build the cache of the same images:

- **once per rank**: each process encodes every image into its own folder, as every rank would if
  the ranks did not share (what DDP costs without the shared cache);
- **shared**: each process encodes its share (``rank::world_size``) into one folder, waits at the
  barrier, then reads the rest (what ``FewShotDataModule`` does under DDP).

The table gives each rank's images encoded and seconds, and whether the features are identical. A
third row builds the same cache in one process on Ray Data (2 actors) and compares it with the local
build.

    python benchmarks/cache_sharing.py          # toy-clip 500 images x 4 views, ViT-B-16 (random) 48 x 2
    python benchmarks/cache_sharing.py --quick  # toy-clip 60 x 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.provenance import current_commit
from promptlab.backbone import FrozenCLIP
from promptlab.data import transforms
from promptlab.data.feature_cache import FeatureCache, encoder_key

OUT = Path(__file__).parent / "cache_sharing.json"
BACKBONES = {"toy-clip": ("toy-clip", "promptlab", 500, 4), "ViT-B-16 (random)": ("ViT-B-16", None, 48, 2)}


class CountingEncoder:
    """The image encoder, counting the images it encodes."""

    def __init__(self, backbone: FrozenCLIP) -> None:
        self.backbone, self.images = backbone, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.images += len(images)
        return self.backbone.encode_image(images)


def make_backbone(name: str) -> FrozenCLIP:
    """The backbone, its random weights (ViT-B-16 here) the same in every process."""
    architecture, pretrained, _, _ = BACKBONES[name]
    torch.manual_seed(0)
    return FrozenCLIP(architecture, pretrained=pretrained).eval()


def toy_images(data_root: Path, n: int) -> list[Path]:
    """The first ``n`` distinct images of the toy world's mixed task (training then test)."""
    split = json.loads((data_root / "toy" / "splits" / "mixed.json").read_text())
    entries = split["train"] + split["test"]
    return [data_root / "toy" / "images" / entry[0] for entry in entries[:n]]


def build(backbone: FrozenCLIP, folder: Path, paths: list[Path], views: int, rank: int, world: int) -> dict:
    """One process's cache build: images it encoded, seconds, and the features it ends with."""
    key = encoder_key(backbone.model_name, backbone.image_encoder_state(), backbone.model_cfg)
    encoder = CountingEncoder(backbone)
    cache = FeatureCache(folder, encoder, key)
    transform = transforms.train_transform(backbone.preprocess, (0.5, 1.0))
    barrier = dist.barrier if world > 1 else (lambda: None)
    start = time.perf_counter()
    features, _ = cache.features(paths, transform, views, torch.device("cpu"), 64, 0, False, rank, world, barrier)
    return {"seconds": time.perf_counter() - start, "encoded": encoder.images // views, "features": features}


def worker(rank: int, port: int, name: str, paths: list[Path], views: int, workdir: Path, results: dict) -> None:
    """A DDP rank: the unshared build into its own folder, then the shared build into one folder."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    backbone = make_backbone(name)
    dist.barrier()
    unshared = build(backbone, workdir / f"own-{rank}", paths, views, 0, 1)  # every rank alone
    dist.barrier()
    shared = build(backbone, workdir / "shared", paths, views, rank, 2)
    results[rank] = {
        "unshared_seconds": unshared["seconds"],
        "unshared_encoded": unshared["encoded"],
        "shared_seconds": shared["seconds"],
        "shared_encoded": shared["encoded"],
        "identical": bool(torch.equal(unshared["features"], shared["features"])),
    }
    if rank == 0:
        torch.save(shared["features"], workdir / "shared.pt")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_build(name: str, paths: list[Path], views: int, workdir: Path) -> dict:
    """The same cache in one process, on Ray Data (2 actors), against the shared build's features."""
    backbone = make_backbone(name)
    key = encoder_key(backbone.model_name, backbone.image_encoder_state(), backbone.model_cfg)
    cache = FeatureCache(workdir / "ray", backbone.encode_image, key)
    transform = transforms.train_transform(backbone.preprocess, (0.5, 1.0))
    start = time.perf_counter()
    features, _ = cache.features(paths, transform, views, torch.device("cpu"), 64, engine="ray", ray_actors=2)
    seconds = time.perf_counter() - start
    local = torch.load(workdir / "shared.pt", weights_only=True)
    return {"ray_seconds": seconds, "ray_max_difference": float((features - local).abs().max())}


def measure(name: str, data_root: Path, n: int | None, views: int | None, with_ray: bool) -> dict:
    """Once per rank against shared (two gloo ranks), then Ray, on one backbone."""
    _, _, default_n, default_views = BACKBONES[name]
    n, views = n or default_n, views or default_views
    paths = toy_images(data_root, n)
    with tempfile.TemporaryDirectory() as folder, mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, (free_port(), name, paths, views, Path(folder), results), nprocs=2)
        ranks = [dict(results[r]) for r in (0, 1)]
        row = {"backbone": name, "images": n, "views": views, "ranks": ranks}
        if with_ray:
            row |= ray_build(name, paths, views, Path(folder))
    slowest_unshared = max(r["unshared_seconds"] for r in ranks)
    slowest_shared = max(r["shared_seconds"] for r in ranks)
    return row | {"speedup": slowest_unshared / slowest_shared}


def table(results: dict) -> str:
    """The Markdown table."""
    lines = [
        "| backbone | images x views | once per rank: encoded, s (rank 0 / 1) | shared: encoded, s (rank 0 / 1) "
        "| build time, once per rank / shared | identical features | Ray (2 actors, one process): s, largest gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        a, b = r["ranks"]
        ray = f"{r['ray_seconds']:.1f}, {r['ray_max_difference']:.1e}" if "ray_seconds" in r else "not run"
        unshared = " / ".join(f"{rank['unshared_encoded']}, {rank['unshared_seconds']:.1f}" for rank in (a, b))
        shared = " / ".join(f"{rank['shared_encoded']}, {rank['shared_seconds']:.1f}" for rank in (a, b))
        lines.append(
            f"| {r['backbone']} | {r['images']} x {r['views']} | {unshared} | {shared} | "
            f"{r['speedup']:.2f}x | {a['identical'] and b['identical']} | {ray} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=".", help="folder holding toy/")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--images", type=int, help="images per backbone instead of 500 / 48")
    parser.add_argument("--views", type=int, help="views per image instead of 4 / 2")
    parser.add_argument("--no_ray", action="store_true", help="skip the Ray row")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--quick", action="store_true", help="toy-clip, 60 images x 2 views")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones, args.images, args.views = ["toy-clip"], args.images or 60, args.views or 2
    results: dict = {"machine": f"{os.cpu_count()} CPU cores, no GPU, one thread per rank", "commit": current_commit()}
    data_root = Path(args.data_root).resolve()
    results["runs"] = [measure(b, data_root, args.images, args.views, not args.no_ray) for b in args.backbones]
    results["table"] = table(results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
