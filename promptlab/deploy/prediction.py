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
# The rules that answer "none of these", by what a prediction's ``rejected_by`` says.
UNFAMILIAR = "unfamiliar"  # the familiarity (promptlab.deploy.open_set) is below the classifier's threshold
UNSURE = "unsure"  # the best calibrated probability is below ``reject_below``
REJECTION_RULES = {
    UNFAMILIAR: "it looks like none of the training images",
    UNSURE: "no class is probable enough",
}

Images = Any
"""One image or a list of them (see :mod:`promptlab.deploy.image_inputs` for what is accepted)."""


@dataclass
class Prediction:
    """One image's prediction: the best class, its probability, the top-k (class, probability), and
    whether the classifier answers "none of these" and by which rule (``rejected_by``: ``"unfamiliar"``
    or ``"unsure"``, see :data:`REJECTION_RULES`; ``label`` still names the best class). ``familiarity``
    is the image's familiarity score, where the classifier has one.
    """

    label: str
    probability: float
    top_k: list[tuple[str, float]]
    none_of_these: bool = False
    rejected_by: str | None = None
    familiarity: float | None = None

    @classmethod
    def from_top(
        cls,
        values: Sequence[float],
        indices: Sequence[int],
        class_names: Sequence[str],
        reject_below: float | None = None,
        familiarity: float | None = None,
        unfamiliar_below: float | None = None,
    ) -> Prediction:
        """From the k best probabilities (descending), their class indices and the image's familiarity."""
        top_k = [(class_names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]
        rejected_by = None
        if familiarity is not None and unfamiliar_below is not None and familiarity < unfamiliar_below:
            rejected_by = UNFAMILIAR
        elif top_k[0][1] < (reject_below or 0.0):
            rejected_by = UNSURE
        familiarity = None if familiarity is None else float(familiarity)
        return cls(top_k[0][0], top_k[0][1], top_k, rejected_by is not None, rejected_by, familiarity)

    def to_dict(self) -> dict:
        """JSON-ready: ``top_k`` as a list of {"label", "probability"}."""
        return {
            "label": self.label,
            "probability": self.probability,
            "none_of_these": self.none_of_these,
            "rejected_by": self.rejected_by,
            "familiarity": self.familiarity,
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


def check_unfamiliar_below(value: float | None, option: str = "unfamiliar_below") -> float | None:
    """A familiarity threshold is a number from -2 to 2 (-2 turns the rule off).

    Raises:
        ThresholdError: with one sentence naming ``option``.
    """
    if value is not None and not -2.0 <= float(value) <= 2.0:
        raise ThresholdError(f"{option} must be a familiarity from -2 (never reject) to 2 (got {value}), such as 1.5.")
    return None if value is None else float(value)


def rank(
    probabilities: Any,
    class_names: Sequence[str],
    k: int,
    reject_below: float | None = None,
    familiarity: Any = None,
    unfamiliar_below: float | None = None,
) -> list[Prediction]:
    """(N, C) probabilities (nested lists, or anything with ``tolist``) and (N,) familiarity (or None)
    -> one :class:`Prediction` per row with its ``k`` most likely classes; "none of these" where the
    familiarity is below ``unfamiliar_below`` or the best probability below ``reject_below``.
    """
    threshold = check_reject_below(reject_below)
    unfamiliar_below = check_unfamiliar_below(unfamiliar_below)
    rows = probabilities.tolist() if hasattr(probabilities, "tolist") else probabilities
    scores = (
        [None] * len(rows)
        if familiarity is None
        else list(familiarity.tolist() if hasattr(familiarity, "tolist") else familiarity)
    )
    predictions = []
    for row, score in zip(rows, scores, strict=True):
        best = heapq.nlargest(min(k, len(class_names)), range(len(row)), key=row.__getitem__)
        predictions.append(
            Prediction.from_top([row[i] for i in best], best, class_names, threshold, score, unfamiliar_below)
        )
    return predictions
