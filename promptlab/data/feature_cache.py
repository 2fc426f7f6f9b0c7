"""Image features computed once and kept on disk, for methods whose image encoder is frozen.

The reference CoOp runs the image encoder on every training step. With a frozen encoder its output
only depends on the encoder's weights, the transform and the image, so promptlab computes it once:
``views`` augmented views of each training image (view ``v`` of an image is the same draw every
time, seeded by the image's content) and the one test view of each evaluation image. Features are
stored per image under

    <cache root>/<encoder key>/<transform key>/<sha256[:2]>/<sha256 of the file>.safetensors

so a second run, another seed, another shot count or another method reuses them. Training then
draws one of the cached views of each image per epoch and never runs the image encoder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, cast

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from promptlab.data.datasets import collate_skipping_none, read_or_skip
from promptlab.data.images import ImageLoadError, load_image
from promptlab.data.seeded_views import seeded_views, view_seed
from promptlab.files import atomic_write

CACHE_DIR_ENV = "PROMPTLAB_CACHE_DIR"
FORMAT_VERSION = "1"  # bump when the stored content changes meaning

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$PROMPTLAB_CACHE_DIR``, else ``~/.cache/promptlab/features``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "promptlab" / "features")


CachedFeatureKind = Literal["projected", "pre_projection"]
"""What a method learns from: the image features, or the pooled features before the last projection (ProLIP)."""


def encoder_key(model_name: str, image_encoder: dict[str, torch.Tensor], architecture: dict | None = None) -> str:
    """``<model name>-<hash of the architecture config and the image encoder's weights>``: random weights,
    tuned copies and the same weights under another activation (GELU, QuickGELU) all differ.
    """
    digest = hashlib.sha256(json.dumps(architecture or {}, sort_keys=True).encode())
    for name, tensor in image_encoder.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name)[-60:]  # local-dir:/a/b -> local-dir_a_b
    return f"{readable}-{digest.hexdigest()[:16]}"


def transform_key(transform: Callable, views: int) -> str:
    """Hash of the transform's description (sizes, crop scale, normalisation) and the view count."""
    return hashlib.sha256(f"{FORMAT_VERSION}|{views}|{transform!r}".encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """SHA-256 of an image file's bytes."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ImageLoadError(
            f"Cannot read image {str(path)!r}: {error.strerror}; replace or remove the file."
        ) from None


def _digest_or_skip(path: Path, skip: bool) -> str:
    """:func:`file_digest`, or "" for an unreadable file when skipping those."""
    return read_or_skip(lambda: file_digest(path), skip) or ""


class _Views(Dataset):
    """(views, 3, H, W) tensors of the images to encode; view v of an image is seeded by (content, v)."""

    def __init__(self, paths: list[Path], digests: list[str], transform: Callable, views: int, skip_bad: bool):
        self.paths, self.digests, self.transform, self.views, self.skip_bad = paths, digests, transform, views, skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        image = read_or_skip(lambda: load_image(self.paths[index]), self.skip_bad)
        if image is None:
            return None
        return seeded_views(image, self.transform, self.views, view_seed(self.digests[index])), index


class FeatureCache:
    """Image features of one frozen image encoder, on disk.

    Args:
        root: cache root folder (default :func:`default_cache_dir`).
        encoder: the frozen image encoder, (B, 3, H, W) -> (B, D) normalised features.
        key: :func:`encoder_key` of that encoder.
    """

    def __init__(self, root: Path, encoder: Callable[[torch.Tensor], torch.Tensor], key: str) -> None:
        self.root, self.encoder, self.key = Path(root), encoder, key

    def features(
        self,
        paths: list[Path],
        transform: Callable,
        views: int,
        device: torch.device,
        batch_size: int = 64,
        num_workers: int = 0,
        skip_bad_images: bool = False,
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] = lambda: None,
        engine: Literal["local", "ray"] = "local",
        ray_actors: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of every image, computed where missing.

        Under data-parallel training every process calls this: each encodes its share of the
        missing images, all wait at ``barrier``, then all read the whole set (the images are
        encoded once, and the features shared through the disk). With ``engine="ray"`` the first
        process hands all the missing images to a Ray Data actor pool
        (:func:`promptlab.data.ray_encoding.ray_encode`, the same views and features) while the others wait.

        Returns:
            (N', views, D) features and the (N',) indices into ``paths`` they belong to (N' < N
            only when unreadable images were skipped).
        """
        folder = self.root / self.key / transform_key(transform, views)
        digests = [_digest_or_skip(p, skip_bad_images) for p in paths]
        files = [folder / d[:2] / f"{d}.safetensors" if d else None for d in digests]

        @torch.no_grad()
        def encode(todo: list[int]) -> None:
            if not todo:
                return
            if engine == "ray":
                encode_on_ray(todo)
                return
            dataset = _Views([paths[i] for i in todo], [digests[i] for i in todo], transform, views, skip_bad_images)
            # Its own generator: a loader draws a base seed when iterated, and drawing it from the global
            # RNG would make a run that builds the cache train differently from one that reads it.
            loader = DataLoader(dataset, max(1, batch_size // views), num_workers=num_workers,
                                collate_fn=collate_skipping_none, generator=torch.Generator())  # fmt: skip
            desc = f"Caching image features ({len(todo)} images x {views} view{'s' * (views > 1)})"
            started = time.monotonic()
            for batch in tqdm(loader, desc=desc, disable=rank != 0, leave=False):
                if batch is None:
                    continue
                images, local = batch  # (B, V, 3, H, W), (B,)
                encoded = self.encoder(images.flatten(0, 1).to(device)).float().cpu().unflatten(0, (len(local), views))
                for j, features in zip(local.tolist(), encoded, strict=True):
                    _atomic_save(features.contiguous(), files[todo[j]])
            if rank == 0:
                log.info(
                    "%s: done in %.1f s; later runs with this encoder read them.", desc, time.monotonic() - started
                )

        def encode_on_ray(todo: list[int]) -> None:
            from promptlab.data.ray_encoding import ray_encode

            log.info("Caching image features of %d images x %d views on Ray Data.", len(todo), views)
            encoded, errors = ray_encode(
                {"features": self.encoder},
                [str(paths[i]) for i in todo],
                [view_seed(digests[i]) for i in todo],
                transform,
                views,
                batch_size,
                ray_actors,
            )
            for j, i in enumerate(todo):
                if errors[j]:
                    read_or_skip(functools.partial(_refuse, errors[j]), skip_bad_images)
                else:
                    _atomic_save(encoded["features"][j].contiguous(), cast(Path, files[i]))

        barrier()  # every process sees the cache in the same state, so the shares below cover all
        missing = [i for i, f in enumerate(files) if f is not None and not f.is_file()]
        share = (missing if rank == 0 else []) if engine == "ray" else missing[rank::world_size]
        encode(share)
        barrier()
        # Normally nothing: what another process could not write (a crash, a concurrent job's race).
        encode([i for i in missing if not cast(Path, files[i]).is_file()])
        kept = [i for i, f in enumerate(files) if f is not None and f.is_file()]
        features = (
            torch.stack([load_file(cast(Path, files[i]))["features"] for i in kept])
            if kept
            else torch.empty(0, views, 0)
        )
        return features, torch.tensor(kept, dtype=torch.long)


def _refuse(reason: str) -> None:
    """Raises an image's refusal again (as the local loader would have raised it)."""
    raise ImageLoadError(reason)


def _atomic_save(features: torch.Tensor, path: Path) -> None:
    """Saves one image's features atomically, so a concurrent reader never sees half a file."""
    atomic_write(path, lambda temporary: save_file({"features": features}, str(temporary)))


class CachedFeatures(Dataset):
    """(feature, label, index) items from cached (N, V, D) features; a random view per item when V > 1."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        self.features, self.labels, self.indices = features, labels, indices

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        views = self.features.shape[1]
        view = int(torch.randint(views, ())) if views > 1 else 0
        return self.features[item, view], int(self.labels[item]), int(self.indices[item])
