"""The calibration record an exported classifier carries: the temperature its probabilities are
divided by, and where it came from (fitted by :mod:`promptlab.methods._calibration`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Calibration:
    """What the run's test metrics and the classifier file record about calibration.

    Attributes:
        temperature: logits are divided by it before the softmax (1.0: not calibrated).
        fitted_on: a sentence saying where the temperature came from (or why there is none).
        num_images: validation images it was fitted on (0 when not fitted).
        fitted_temperature: the temperature that minimised the validation NLL, applied or not.
        ece_before / ece_after: expected calibration error on the test split with T = 1 and with
            the fitted T (None until a test measured them).
        nll_before / nll_after: the test split's mean negative log-likelihood, likewise (a proper
            score: unlike ECE it does not depend on binning, which is noisy on a few hundred images).
    """

    temperature: float = 1.0
    fitted_on: str = "not calibrated: no validation split"
    num_images: int = 0
    fitted_temperature: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready, as test metrics and classifier files record it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        """From :meth:`to_dict`'s output; keys of a newer promptlab are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
