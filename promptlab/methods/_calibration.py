"""Calibrated confidence: temperature scaling (Guo et al., 2017) fitted on validation logits, and the
expected calibration error before and after it.

A classifier's softmax over CLIP logits is often over- or under-confident; dividing the logits by one
temperature ``T`` fitted to minimise the validation negative log-likelihood changes no prediction
(argmax is unchanged) but makes the top probability an honest estimate of being right, which the
"none of these" threshold relies on.

Few-shot validation splits are small (4 images per class in the CoOp protocol), and a temperature
fitted on 32 images is noisy: for a classifier that is already calibrated, applying it makes things
worse. So the fitted T is applied only when it beats T = 1 on the validation split by a
likelihood-ratio test at 5% (one parameter: 2 x the gain in log-likelihood above 3.84).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from promptlab.deploy.calibration import Calibration

ECE_BINS = 15  # the usual 15 equal-width confidence bins
LIKELIHOOD_RATIO_CRITICAL = 3.841  # chi-square with 1 degree of freedom at 5%


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimising the negative log-likelihood of ``softmax(logits / T)``.

    Optimised over log T (so T stays positive) with L-BFGS in float64; a handful of images cannot
    give a trustworthy temperature, so T is clamped to [0.05, 20].

    Args:
        logits: (N, C) uncalibrated logits.
        labels: (N,) true classes.
        max_iter: L-BFGS iterations.

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


def calibrate(logits: torch.Tensor, labels: torch.Tensor, where: str) -> Calibration:
    """Fits T on validation logits and keeps it only when significantly better than T = 1 (see the
    module docstring).

    Args:
        logits: (N, C) uncalibrated validation logits.
        labels: (N,) true classes.
        where: what the logits are of, e.g. "validation split".
    """
    n = len(labels)
    if n == 0:
        return Calibration()
    fitted = fit_temperature(logits, labels)
    logits64, labels64 = logits.detach().double().cpu(), labels.detach().long().cpu()
    gain = float(
        F.cross_entropy(logits64, labels64, reduction="sum")
        - F.cross_entropy(logits64 / fitted, labels64, reduction="sum")
    )  # nats of validation log-likelihood gained by the fitted T
    source = f"{where} ({n} images)"
    if 2 * gain < LIKELIHOOD_RATIO_CRITICAL:
        reason = f"the fitted T = {fitted:.2f} is not significantly better than 1 (likelihood-ratio test, 5%)"
        return Calibration(1.0, f"{source}: {reason}", n, fitted)
    return Calibration(fitted, source, n, fitted)


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Torchmetrics' multiclass ECE (L1, 15 bins) of (N, C) probabilities against (N,) labels."""
    if len(labels) == 0:
        return float("nan")
    return float(
        multiclass_calibration_error(
            probabilities.float().cpu(), labels.long().cpu(), probabilities.shape[-1], n_bins=ECE_BINS, norm="l1"
        )
    )
