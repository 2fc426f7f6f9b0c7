"""The base of methods fitted on cached image features when ``fit`` starts (the linear probe, Tip-Adapter)."""

from __future__ import annotations

from typing import Any

import torch

from promptlab.data.dataset_error import DatasetError
from promptlab.methods._base import CLIPClassifier


class FeatureFitted(CLIPClassifier):
    """Base of the methods fitted on cached image features when ``fit`` starts (the linear probe,
    Tip-Adapter): no epochs to speak of, hyper-parameters chosen on validation, and a head that
    exists for the training classes only.
    """

    uses_epochs = False
    transfers_to_new_classes = False

    def split_features(self, split: str, augmented: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, V, D) features and (N,) labels of a split, from the connected data module."""
        if self.data is None:
            raise DatasetError(f"{self.label} reads its features from the data module: call connect_data first.")
        return self.data.split_features(split, augmented)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        return None  # fitted in on_fit_start

    def configure_optimizers(self) -> Any:
        return None  # fitted in on_fit_start, with the method's own optimiser where it has one
