"""Frozen encoders over many images on Ray Data (``--data.engine ray``): the feature cache's views of a
training set and NoLA's pass over its unlabelled pool are one bulk map, images to features, here run
by a pool of actors (a GPU each where the cluster has GPUs) that each hold a copy of the encoders.

Each actor decodes with promptlab's decoder and draws an image's views with the same seeds as the
local path (:func:`promptlab.data.seeded_views.seeded_views`), so the features equal the local ones
(the same top-1 and pseudo-labels, values to floating-point noise of the batch shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from typing_extensions import override

from promptlab.data.images import ImageLoadError, load_image
from promptlab.data.ray_cluster import actor_pool_plan, import_ray
from promptlab.data.seeded_views import seeded_views


class BoundEncoder(nn.Module):
    """A module's encoding method as a module of its own, so that it travels to the actors whole.

    Args:
        owner: the module (a :class:`promptlab.backbone.FrozenCLIP`, for one).
        method: the name of its method, (B, 3, H, W) -> (B, D).
        context: the name of a method of ``owner`` giving a context to encode in (``without_visual_prompts``).
    """

    def __init__(self, owner: nn.Module, method: str, context: str | None = None) -> None:
        super().__init__()
        self.owner, self.method, self.context = owner, method, context

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            return getattr(self.owner, self.method)(images)
        with getattr(self.owner, self.context)():
            return getattr(self.owner, self.method)(images)


def as_module(encoder: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """An encoder (a module, or a bound method of one) as a module."""
    if isinstance(encoder, nn.Module):
        return encoder
    owner = getattr(encoder, "__self__", None)
    if isinstance(owner, nn.Module):
        return BoundEncoder(owner, encoder.__name__)
    raise TypeError(f"The ray engine encodes with modules or their methods, not {type(encoder).__name__}.")


class EncodeActor:
    """One actor of the pool: the encoders on its device, then batches of paths -> features.

    Args:
        encoders: name -> module, (B, 3, H, W) -> (B, D), put in Ray's object store once for all actors.
        transform: a PIL image -> a (3, H, W) tensor.
        views: views per image (view v drawn with seed ``seed + v``).
    """

    def __init__(self, encoders: Any, transform: Callable, views: int) -> None:
        import ray

        encoders = ray.get(encoders)  # name -> module
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Ray gives each actor its GPU
        self.encoders = {name: module.to(self.device).eval() for name, module in encoders.items()}
        self.transform, self.views = transform, views

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"index", "path", "seed"}`` -> ``{"index", "error", <name>: (B, V, D) for each encoder}``."""
        errors, stacks, readable = [""] * len(batch["path"]), [], []
        for row, (path, seed) in enumerate(zip(batch["path"], batch["seed"], strict=True)):
            try:
                image = load_image(str(path))
            except ImageLoadError as error:  # the image's refusal; the caller decides whether it may be skipped
                errors[row] = str(error)
                continue
            stacks.append(seeded_views(image, self.transform, self.views, int(seed)))
            readable.append(row)
        out: dict[str, np.ndarray] = {"index": batch["index"], "error": np.array(errors, dtype=object)}
        images = torch.stack(stacks).flatten(0, 1).to(self.device) if stacks else None  # (B' V, 3, H, W)
        for name, encoder in self.encoders.items():
            encoded = encoder(images).float().cpu().unflatten(0, (len(readable), self.views)) if stacks else None
            width = encoded.shape[-1] if encoded is not None else 0
            features = np.zeros((len(errors), self.views, width), dtype=np.float32)
            if encoded is not None:
                features[readable] = encoded.numpy()
            out[name] = features
        return out


def ray_encode(
    encoders: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    paths: list[str],
    seeds: list[int],
    transform: Callable,
    views: int = 1,
    batch_size: int = 64,
    actors: int | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every image through every encoder on Ray Data, in input order.

    Args:
        encoders: name -> encoder (a module or a bound method of one), (B, 3, H, W) -> (B, D).
        paths: image files (or URIs).
        seeds: per image, the seed of its first view.
        transform: a PIL image -> a (3, H, W) tensor.
        views: views per image.
        batch_size: images per encoder call, views included (as the local loader's).
        actors: actors in the pool (default: one per GPU, else 2).

    Returns:
        name -> (N, views, D) features (zeros for unreadable images), and per image "" or the reason
        it could not be read.
    """
    ray = import_ray("--data.engine ray")
    modules = {name: as_module(encoder) for name, encoder in encoders.items()}
    devices = {name: next(module.parameters()).device for name, module in modules.items()}
    for module in modules.values():
        module.cpu()  # the actors need not have the driver's GPU; each moves its copy to its own device
    try:
        shipped = ray.put(modules)
    finally:
        for name, module in modules.items():
            module.to(devices[name])
    gpus = int(ray.cluster_resources().get("GPU", 0))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    rows = [{"index": i, "path": str(p), "seed": s} for i, (p, s) in enumerate(zip(paths, seeds, strict=True))]
    blocks, pool = actor_pool_plan(len(rows), max(1, batch_size // views), actors, gpus)
    results = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        EncodeActor,
        fn_constructor_args=(shipped, transform, views),
        batch_size=max(1, batch_size // views),
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_gpus=1 if gpus else 0,
        batch_format="numpy",
    )
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in modules}
    indices: list[np.ndarray] = []
    errors = [""] * len(paths)
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        indices.append(batch["index"])
        for index, error in zip(batch["index"].tolist(), batch["error"], strict=True):
            errors[index] = str(error)
        for name in modules:
            chunks[name].append(batch[name])
    order = np.argsort(np.concatenate(indices)) if indices else np.zeros(0, dtype=np.int64)
    features = {}
    for name, parts in chunks.items():
        width = max((part.shape[-1] for part in parts), default=0)
        joined = np.concatenate([_widen(part, width) for part in parts]) if parts else np.zeros((0, views, 0))
        features[name] = torch.from_numpy(np.ascontiguousarray(joined[order], dtype=np.float32))
    return features, errors


def _widen(features: np.ndarray, width: int) -> np.ndarray:
    """A batch of only unreadable images has width 0: zeros of the others' width."""
    if features.shape[-1] == width:
        return features
    return np.zeros((*features.shape[:-1], width), dtype=np.float32)
