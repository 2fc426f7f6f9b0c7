"""Which unlabelled images to label next: uncertain ones, spread over the image space.

Uncertainty alone picks near-duplicates (twenty shots of the same ambiguous object); diversity alone
picks images the classifier already gets right. The rule here is a greedy uncertainty-weighted
k-center: each pick maximises ``(1 - margin) x distance to the nearest labelled or already picked
image`` (cosine distance of normalised image features), where the margin is the gap between the
two most likely classes of the calibrated probabilities.
"""

from __future__ import annotations

import torch


def margins(probabilities: torch.Tensor) -> torch.Tensor:
    """(N, C) probabilities -> (N,) top-1 minus top-2 probability (small: the classifier hesitates)."""
    if probabilities.shape[1] < 2:
        return torch.ones(probabilities.shape[0])
    top2 = probabilities.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def rank_for_labelling(
    probabilities: torch.Tensor,
    features: torch.Tensor,
    labelled_features: torch.Tensor | None = None,
    count: int = 12,
) -> list[int]:
    """Indices of the ``count`` pool images to label next, best first.

    Args:
        probabilities: (N, C) calibrated class probabilities of the pool images.
        features: (N, D) L2-normalised image features of the pool images.
        labelled_features: (M, D) L2-normalised features of the images labelled already (the picks
            keep away from them too), or None.
        count: how many to pick (at most N).
    """
    n = probabilities.shape[0]
    uncertainty = (1 - margins(probabilities)).clamp_min(1e-6)  # (N,), never 0: ties fall to distance
    if labelled_features is not None and len(labelled_features):
        distance = (1 - features @ labelled_features.T).min(dim=1).values  # (N,) to the nearest labelled image
    else:
        distance = torch.ones(n)
    picked: list[int] = []
    available = torch.ones(n, dtype=torch.bool)
    for _ in range(min(count, n)):
        score = torch.where(available, uncertainty * distance.clamp_min(0), torch.tensor(-1.0))
        best = int(score.argmax())
        picked.append(best)
        available[best] = False
        distance = torch.minimum(distance, 1 - features @ features[best])  # (N,)
    return picked
