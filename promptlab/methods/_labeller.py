"""NoLA's stage 2: pseudo-label selection and the DINO labeller (frozen self-supervised ViT + MLP head)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from promptlab.errors import UserError
from promptlab.toy.dino import load_toy_dino

log = logging.getLogger(__name__)

HUB_MODELS = {  # name -> torch.hub repository (weights download once into ~/.cache/torch/hub)
    "dino_vits16": "facebookresearch/dino:main",
    "dino_vitb16": "facebookresearch/dino:main",
    "dinov2_vits14": "facebookresearch/dinov2",
    "dinov2_vitb14": "facebookresearch/dinov2",
}


# The normalisation each DINO backbone was trained with: torch.hub's on ImageNet's statistics, toy-dino on
# toy-clip's (OpenAI CLIP's), from which it was warm-started.
IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_NORMALISATION = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
DINO_NORMALISATION = {"toy-dino": OPENAI_NORMALISATION} | dict.fromkeys(HUB_MODELS, IMAGENET_NORMALISATION)


def note_foreign_normalisation(dino: str, mean: tuple[float, ...], std: tuple[float, ...]) -> str | None:
    """One sentence when the DINO labeller is fed another normalisation than it was trained with, else None.

    NoLA (as its reference) gives the labeller CLIP's test view of each image, CLIP's mean and std included.
    """
    trained_mean, trained_std = DINO_NORMALISATION.get(dino, IMAGENET_NORMALISATION)
    if all(abs(a - b) < 0.01 for a, b in zip((*mean, *std), (*trained_mean, *trained_std), strict=True)):
        return None
    show = lambda values: "(" + ", ".join(f"{v:.3f}" for v in values) + ")"  # noqa: E731
    return (
        f"NoLA feeds the DINO labeller CLIP's preprocessing, as its reference does: mean {show(mean)} and std "
        f"{show(std)}, while {dino} was trained with mean {show(trained_mean)} and std {show(trained_std)}, so its "
        "pseudo-labels may be somewhat worse than that model can give."
    )


class LabellerError(UserError):
    """A DINO backbone that cannot be loaded, or pseudo-labels that cannot be drawn."""


def load_dino(name: str) -> nn.Module:
    """A frozen self-supervised ViT. It sees CLIP's test view of each image (as in the reference: its
    resize, centre crop and normalisation), so one decoded view serves both encoders.

    ``toy-dino`` ships with promptlab; the others come from torch.hub (network needed once).

    Raises:
        LabellerError: unknown name, or the weights cannot be downloaded.
    """
    if name == "toy-dino":
        return load_toy_dino()
    if name not in HUB_MODELS:
        raise LabellerError(f"Unknown DINO backbone {name!r}; use toy-dino or one of {', '.join(HUB_MODELS)}.")
    try:
        model = torch.hub.load(HUB_MODELS[name], name)
    except Exception as error:  # hub raises URLError, HTTPError, RuntimeError... when offline
        raise LabellerError(
            f"Cannot load DINO backbone {name!r} from torch.hub ({type(error).__name__}); it needs the network once "
            "(then ~/.cache/torch/hub). Offline, use --model.init_args.dino toy-dino."
        ) from error
    return model.requires_grad_(False).eval()


def select_pseudo_labels(
    probabilities: torch.Tensor, valid: torch.Tensor, class_names: list[str], min_per_class: int, fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """NoLA's pseudo-labels: per class, the k most confident images predicted as that class,
    k = max(min_per_class, fraction * N / C). A class nobody predicts takes the images that rank it
    second (then third), most confident first; a class with none at all is warned about.

    Args:
        probabilities: (N, C) stage-1 class probabilities of the pool.
        valid: (N,) images that could be read.
        class_names: class names by label (for the warning).
        min_per_class: the least k.
        fraction: k as a share of the pool per class.

    Returns:
        (M,) pool indices and (M,) labels; no image gets two.
    """
    n_classes = probabilities.shape[1]
    k = max(min_per_class, int(fraction * int(valid.sum()) / n_classes))
    ranks = probabilities.argsort(dim=1, descending=True)  # (N, C)
    available = valid.clone()
    picks: dict[int, torch.Tensor] = {}
    for rank in range(min(3, n_classes)):  # classes nobody picked fall back to 2nd, then 3rd choices
        for c in range(n_classes):
            if c in picks:
                continue
            candidates = torch.nonzero((ranks[:, rank] == c) & available).flatten()
            if not len(candidates):
                continue
            picks[c] = candidates[probabilities[candidates, c].argsort(descending=True)[:k]]
            if rank:
                log.warning(
                    "No image is predicted as %r; using %d image(s) that rank it #%d.",
                    class_names[c],
                    len(picks[c]),
                    rank + 1,
                )
        for chosen in picks.values():
            available[chosen] = False
    for c in set(range(n_classes)) - set(picks):
        log.warning("Class %r has no pseudo-labelled image at all; its head learns from none.", class_names[c])
    order = sorted(picks)
    indices = torch.cat([picks[c] for c in order])
    return indices, torch.cat([torch.full_like(picks[c], c) for c in order])


def train_labeller(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    epochs: int = 50,
    lr: float = 1e-3,
    hidden: int = 256,
    batch_size: int = 32,
    seed: int = 0,
) -> nn.Sequential:
    """The reference's MLP (D -> hidden -> ReLU -> C), Adam, cross-entropy, batches of 32, on
    pseudo-labelled features.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    with torch.enable_grad():  # callers may hold no_grad
        _fit(head, optimizer, features, labels, epochs, batch_size, generator)
    return head.eval().requires_grad_(False)


def _fit(head, optimizer, features, labels, epochs: int, batch_size: int, generator: torch.Generator) -> None:
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(head(features[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
