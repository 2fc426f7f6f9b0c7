"""Linear probe: logistic regression on frozen CLIP image features (the CoOp paper's baseline)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from typing_extensions import override

from promptlab.deploy.heads import Head, LinearHead
from promptlab.methods._contract import Bars, Panel, ToyDefaults
from promptlab.methods._feature_fitted import FeatureFitted

log = logging.getLogger(__name__)


class LinearProbe(FeatureFitted):
    """Multinomial logistic regression (scikit-learn's L-BFGS solver) on the normalised image features
    of the training images' test view, fitted once at the start of ``fit``; the epochs do nothing.

    The inverse regularisation strength ``C`` is searched on the validation split as in the CoOp
    paper's linear probe: a coarse grid 1e-6 ... 1e6 (factor 100), then ``search_steps`` bisections
    in log space around the best value. Without validation images (the app's runs) it is searched by
    stratified k-fold cross-validation on the training features (k = min(5, images per class));
    with fewer than 2 images per class ``C = default_c``.

    Args:
        search_steps: bisection steps after the coarse grid.
        default_c: ``C`` when it cannot be searched.
        max_iter: L-BFGS iterations.
        **kwargs: see :class:`~promptlab.methods._base.CLIPClassifier` (the optimiser settings are unused).
    """

    key = "linear_probe"
    label = "Linear probe"
    about = "A baseline: logistic regression on CLIP's image features of your labelled images; no prompts."
    toy = ToyDefaults("linear_probe.yaml")

    # buffers registered in __init__
    weight: torch.Tensor
    bias: torch.Tensor
    c: torch.Tensor

    def __init__(self, search_steps: int = 8, default_c: float = 1.0, max_iter: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        n, d = len(self.class_names), self.backbone.embed_dim
        self.register_buffer("weight", torch.zeros(n, d))  # (C, D) logistic regression coefficients
        self.register_buffer("bias", torch.zeros(n))  # (C,)
        self.register_buffer("c", torch.tensor(float(default_c)))  # the chosen C, kept in the checkpoint

    @override
    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        return image_features @ class_features.to(image_features.dtype).T + self.bias.to(image_features.dtype)

    @override
    def class_features(self) -> torch.Tensor:
        return self.weight

    @override
    def export_head(self) -> Head:
        return LinearHead(self.weight.float(), 1.0, self.bias.float())

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """How strongly each class's weights respond: their norms, and the regularisation chosen."""
        norms = {name: round(float(w.norm()), 3) for name, w in zip(self.class_names, self.weight, strict=True)}
        caption = f"Regularisation C = {float(self.c):.3g} (larger C: weaker regularisation, larger weights)."
        return [Bars("What the linear probe learned: weight norm per class", norms, "weight norm", caption)]

    @override
    def on_fit_start(self) -> None:
        train, train_labels = self.split_features("train", augmented=False)
        val, val_labels = self.split_features("val", augmented=False)
        self.fit_features(train[:, 0], train_labels, val[:, 0] if len(val) else None, val_labels)

    def fit_features(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        val_features: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> float:
        """Fits the probe on (N, D) features; searches C on validation features when given, else by
        cross-validation on the training features.

        Returns:
            The chosen C.
        """
        x, y = features.float().cpu().numpy(), labels.cpu().numpy()
        has_val = val_features is not None and len(val_features) > 0
        folds = min(5, int(torch.bincount(labels).min())) if len(labels) else 0
        if not has_val and folds < 2:
            best_c = float(self.hparams.default_c)
            log.info("Linear probe: no validation images and too few per class to cross-validate; C = %g.", best_c)
        else:
            if val_features is not None and val_labels is not None and len(val_features):
                xv, yv = val_features.float().cpu().numpy(), val_labels.cpu().numpy()
                accuracy = lambda c: float((self._fit(x, y, c).predict(xv) == yv).mean())  # noqa: E731
            else:  # no validation split (the app's runs): stratified k-fold on the training features
                accuracy = lambda c: self._cross_validated(x, y, c, folds)  # noqa: E731
            best_c, best = self._search(accuracy)
            where = "validation" if has_val else f"{folds}-fold cross-validation"
            log.info("Linear probe: C = %.3g (%s accuracy %.1f%%).", best_c, where, 100 * best)
        model = self._fit(x, y, best_c)
        self._store(model)
        self.c.fill_(best_c)
        return best_c

    def _search(self, accuracy) -> tuple[float, float]:
        """The C of the best ``accuracy(C)``: coarse grid, then bisections in log space; (C, accuracy)."""
        scores: dict[float, float] = {}

        def score(c: float) -> float:
            if c not in scores:
                scores[c] = accuracy(c)
            return scores[c]

        grid = [10.0**e for e in range(-6, 7, 2)]
        best_c = max(grid, key=lambda c: (score(c), -abs(math.log10(c))))  # ties: the middle of the grid
        left, right = best_c / 100, best_c * 100
        for _ in range(self.hparams.search_steps):  # bisect in log space towards the better side
            low, high = math.sqrt(left * best_c), math.sqrt(best_c * right)
            if score(low) > score(best_c):
                best_c, right = low, best_c
            elif score(high) > score(best_c):
                best_c, left = high, best_c
            else:
                left, right = low, high
        return best_c, scores[best_c]

    def _cross_validated(self, x, y, c: float, folds: int) -> float:
        from sklearn.model_selection import StratifiedKFold  # scikit-learn only when the probe is fitted

        splits = StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y)
        return sum(float((self._fit(x[a], y[a], c).predict(x[b]) == y[b]).mean()) for a, b in splits) / folds

    def _fit(self, x, y, c: float):
        from sklearn.linear_model import LogisticRegression  # scikit-learn only when the probe is fitted

        return LogisticRegression(C=c, max_iter=self.hparams.max_iter, random_state=0).fit(x, y)

    def _store(self, model) -> None:
        """Copies scikit-learn's coefficients; a class missing from the training labels gets -inf bias."""
        weight = torch.zeros_like(self.weight)
        bias = torch.full_like(self.bias, -1e4)
        classes = torch.as_tensor(model.classes_, dtype=torch.long)
        coef, intercept = torch.as_tensor(model.coef_).float(), torch.as_tensor(model.intercept_).float()
        if len(classes) == 2:  # binary: one row for class 1, the softmax of (0, z) is the sigmoid of z
            weight[classes[1]], bias[classes[1]], bias[classes[0]] = coef[0], intercept[0], 0.0
        else:
            weight[classes], bias[classes] = coef, intercept
        self.weight.copy_(weight.to(self.weight.device))
        self.bias.copy_(bias.to(self.bias.device))
