"""Familiarity: how much an image looks like the images a classifier was trained on, for answering
"none of these" to unknown things and content-free pictures.

A learned prompt maps anything onto its classes with confidence, so the top probability cannot tell
an unknown object from a known one (open-set AUROC 0.78 for CoOp on the toy world's unknown shapes,
``benchmarks/open_set.py``). In CLIP's image-feature space unknown things lie far from the training
images. The familiarity of an L2-normalised image feature ``f`` is

    max_c cos(f, m_c) + max_n cos(f, r_n)

with ``r_n`` the reference features (the training images, at most :data:`MAX_REFERENCE_PER_CLASS`
per class) and ``m_c`` their normalised class means: the nearest class prototype and the nearest
neighbour (Sun et al., 2022), which the benchmark measured best together (AUROC 0.925-0.945 for every
method, 94-98% of content-free pictures rejected) against the top probability, MCM (Ming et al.,
2022) on the zero-shot text features, GL-MCM (Miyai et al., 2023) and either part alone. Its range is
[-2, 2]. The threshold is fitted at test time on images the reference does not hold (see
:func:`held_out_familiarity`) to keep :data:`KEEP_KNOWN` of known images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.errors import UserError

KEEP_KNOWN = 0.95  # the default threshold keeps this share of known images
MAX_REFERENCE_PER_CLASS = 64  # training images kept per class, which bounds the file's size
SCORE = "cosine to the nearest class mean + cosine to the nearest training image"


class OpenSetError(UserError):
    """A familiarity threshold or reference that does not fit; the message says what to do."""


@dataclass
class OpenSet:
    """What an exported classifier records about its familiarity rule.

    Attributes:
        unfamiliar_below: "none of these" where the familiarity is below it.
        fitted_on: a sentence saying which images the threshold was fitted on.
        reference_images: training images in the reference.
        keep: the share of held-out known images the threshold keeps.
        score: what the familiarity is, in words.
    """

    unfamiliar_below: float
    fitted_on: str
    reference_images: int
    keep: float = KEEP_KNOWN
    score: str = SCORE

    def to_dict(self) -> dict:
        """JSON-ready, as test metrics and classifier files record it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> OpenSet:
        """From :meth:`to_dict`'s output; keys of a newer promptlab are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def class_means(reference: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, D) normalised reference features and (N,) labels -> (K, D) normalised means of the K classes
    present (a class without reference images has no prototype).
    """
    present = [c for c in range(num_classes) if bool((labels == c).any())]
    return F.normalize(torch.stack([reference[labels == c].mean(0) for c in present]), dim=-1)


class Familiarity(nn.Module):
    """(B, D) image features -> (B,) familiarity (see the module docstring).

    Args:
        reference: (N, D) reference features (normalised here).
        labels: (N,) their classes.
        num_classes: the classifier's class count.
    """

    reference: torch.Tensor
    labels: torch.Tensor
    prototypes: torch.Tensor

    def __init__(self, reference: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        if reference.dim() != 2 or len(reference) != len(labels) or len(reference) < 2:
            raise OpenSetError(
                f"The familiarity reference must be at least 2 feature rows with one label each "
                f"(got {tuple(reference.shape)} features, {len(labels)} labels); export the classifier again."
            )
        reference = F.normalize(reference.float(), dim=-1)
        self.register_buffer("reference", reference)  # (N, D)
        self.register_buffer("labels", labels.long())  # (N,)
        self.register_buffer("prototypes", class_means(reference, labels.long(), num_classes))  # (K, D)

    @override
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features.float(), dim=-1)
        nearest_class = (features @ self.prototypes.T).amax(dim=-1)
        nearest_image = (features @ self.reference.T).amax(dim=-1)
        return nearest_class + nearest_image


def held_out_familiarity(reference: torch.Tensor, labels: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The familiarity of each reference image against the others: leave-one-out, its own feature
    removed from its nearest neighbours and from its class mean, so training images count as held out.

    Args:
        reference: (N, D) features.
        labels: (N,) their classes.
        chunk: rows compared at once (bounds the (chunk, N) similarity held in memory).

    Returns:
        (N,) familiarity; images alone in their class are scored against the other classes only.
    """
    reference, labels = F.normalize(reference.float(), dim=-1), labels.long()
    num_classes = int(labels.max()) + 1
    nearest_image = reference.new_empty(len(reference))
    for start in range(0, len(reference), chunk):
        rows = torch.arange(start, min(start + chunk, len(reference)), device=reference.device)
        similarity = reference[rows] @ reference.T  # (chunk, N)
        similarity[torch.arange(len(rows), device=reference.device), rows] = -float("inf")  # not its own neighbour
        nearest_image[rows] = similarity.amax(dim=-1)
    sums = reference.new_zeros(num_classes, reference.shape[1]).index_add_(0, labels, reference)  # (K, D)
    counts = torch.bincount(labels, minlength=num_classes)  # (K,)
    to_means = reference @ F.normalize(sums, dim=-1).T  # (N, K)
    own_without_self = F.normalize(sums[labels] - reference, dim=-1)  # (N, D)
    own = torch.where(counts[labels] > 1, (reference * own_without_self).sum(-1), -float("inf"))
    others = to_means.scatter(1, labels[:, None], -float("inf"))
    others = others.masked_fill((counts == 0)[None, :], -float("inf")).amax(dim=-1)
    return torch.maximum(own, others) + nearest_image


def fit_threshold(scores: torch.Tensor, keep: float = KEEP_KNOWN) -> float:
    """The familiarity below which ``1 - keep`` of the held-out known images' ``scores`` fall."""
    finite = scores[torch.isfinite(scores)].double()
    if len(finite) == 0:
        raise OpenSetError("No held-out image to fit the familiarity threshold on; train on at least 2 images.")
    return float(torch.quantile(finite, 1 - keep))


def subsample_reference(labels: torch.Tensor, per_class: int = MAX_REFERENCE_PER_CLASS, seed: int = 0) -> torch.Tensor:
    """Indices of at most ``per_class`` images of each class, drawn with a fixed seed, in order."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
