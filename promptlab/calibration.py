"""Calibrated confidence: temperature scaling (Guo et al., 2017) fitted on validation logits, and the
expected calibration error before and after it.

A classifier's softmax over CLIP logits is often over- or under-confident; dividing the logits by one
temperature ``T`` fitted to minimise the validation negative log-likelihood changes no prediction
(argmax is unchanged) but makes the top probability an honest estimate of being right, which the
"none of these" threshold relies on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15  # the usual 15 equal-width confidence bins


@dataclass
class Calibration:
    """What the run's test metrics and the classifier file record about calibration.

    Attributes:
        temperature: logits are divided by it before the softmax (1.0: not calibrated).
        fitted_on: a sentence saying where the temperature came from (or why there is none).
        num_images: validation images it was fitted on (0 when not fitted).
        ece_before / ece_after: expected calibration error on the test split with T = 1 and with
            the fitted T (None until a test measured them).
        nll_before / nll_after: the test split's mean negative log-likelihood, likewise (a proper
            score: unlike ECE it does not depend on binning, which is noisy on a few hundred images).
    """

    temperature: float = 1.0
    fitted_on: str = "not calibrated: no validation split"
    num_images: int = 0
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> Calibration:
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimising the negative log-likelihood of ``softmax(logits / T)``.

    Optimised over log T (so T stays positive) with L-BFGS in float64; a handful of images cannot
    give a trustworthy temperature, so T is clamped to [0.05, 20].

    Args:
        logits: (N, C) uncalibrated logits; labels: (N,) true classes.

    Returns:
        The fitted temperature (1.0 when ``logits`` is empty).
    """
    if len(logits) == 0:
        return 1.0
    # Evaluation runs under inference mode (Lightning's test loop): fitting needs autograd and
    # ordinary tensors, so it leaves that mode and copies the logits out of it.
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().double().cpu().clone(), labels.detach().long().cpu().clone()
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """torchmetrics' multiclass ECE (L1, 15 bins) of (N, C) probabilities against (N,) labels."""
    if len(labels) == 0:
        return float("nan")
    return float(
        multiclass_calibration_error(
            probabilities.float().cpu(), labels.long().cpu(), probabilities.shape[-1], n_bins=ECE_BINS, norm="l1"
        )
    )
