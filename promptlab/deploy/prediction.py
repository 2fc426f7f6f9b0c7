"""What the torch classifier, the ONNX runtime and the server share (imports no torch): one image's
answer and ranking probabilities into answers.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptlab.errors import UserError

NONE_OF_THESE = "none of these"

Images = Any
"""One image or a list of them (see :mod:`promptlab.deploy.image_inputs` for what is accepted)."""


@dataclass
class Prediction:
    """One image's prediction: the best class, its probability, the top-k (class, probability), and
    whether the classifier answers "none of these" (the best probability is below the rejection
    threshold; ``label`` still names the best class).
    """

    label: str
    probability: float
    top_k: list[tuple[str, float]]
    none_of_these: bool = False

    @classmethod
    def from_top(
        cls,
        values: Sequence[float],
        indices: Sequence[int],
        class_names: Sequence[str],
        reject_below: float | None = None,
    ) -> Prediction:
        """From the k best probabilities (descending) and their class indices."""
        top_k = [(class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]
        return cls(top_k[0][0], top_k[0][1], top_k, top_k[0][1] < (reject_below or 0.0))

    def to_dict(self) -> dict:
        """JSON-ready: ``top_k`` as a list of {"label", "probability"}."""
        return {
            "label": self.label,
            "probability": self.probability,
            "none_of_these": self.none_of_these,
            "top_k": [{"label": name, "probability": p} for name, p in self.top_k],
        }


class ThresholdError(UserError):
    """A rejection threshold that is not a probability."""


def check_reject_below(value: float | None, option: str = "reject_below") -> float | None:
    """A rejection threshold must be a probability in [0, 1).

    Raises:
        ThresholdError: with one sentence naming ``option``.
    """
    if value is not None and not 0.0 <= float(value) < 1.0:
        raise ThresholdError(f"{option} must be a probability from 0 to below 1 (got {value}), such as 0.5.")
    return None if value is None else float(value)


def rank(probabilities: Any, class_names: Sequence[str], k: int, reject_below: float | None = None) -> list[Prediction]:
    """(N, C) probabilities (nested lists, or anything with ``tolist``) -> one :class:`Prediction` per row
    with its ``k`` most likely classes; "none of these" where the best is below ``reject_below``.
    """
    threshold = check_reject_below(reject_below)
    rows = probabilities.tolist() if hasattr(probabilities, "tolist") else probabilities
    predictions = []
    for row in rows:
        best = heapq.nlargest(min(k, len(class_names)), range(len(row)), key=row.__getitem__)
        predictions.append(Prediction.from_top([row[i] for i in best], best, class_names, threshold))
    return predictions
