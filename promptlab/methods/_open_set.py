"""Fitting the familiarity rule of "none of these" (:mod:`promptlab.deploy.open_set`) when a run is
tested, and the run folder's file that carries it to export.

The reference is the training images (the unlabelled pool, labelled by the method's own predictions,
for a method that learns without labels) encoded by the method's image encoder, test view, at most
:data:`~promptlab.deploy.open_set.MAX_REFERENCE_PER_CLASS` per class (drawn from at most twice as many
images per class on average). The threshold is fitted on
known images the reference does not hold: the validation split, the training images left out of
the reference, and each reference image against the others (leave-one-out). Never the test images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from promptlab.deploy.open_set import (
    MAX_REFERENCE_PER_CLASS,
    Familiarity,
    OpenSet,
    fit_threshold,
    held_out_familiarity,
    subsample_reference,
)
from promptlab.files import atomic_write
from promptlab.run_folder import OPEN_SET_FILE

OpenSetFit = tuple[OpenSet, torch.Tensor, torch.Tensor]
"""The record, (N, D) normalised reference features and their (N,) labels."""


@torch.no_grad()
def _encode(model: Any, loader, predicted_labels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) normalised image features of every readable image of ``loader`` and (N,) labels (the
    model's predictions where ``predicted_labels``).
    """
    features, labels = [], []
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable and skipped
            continue
        images, batch_labels, _ = batch
        encoded = model.encode_images(images.to(model.device))
        features.append(F.normalize(encoded.float(), dim=-1).cpu())
        # The method's forward takes encoded features as they are: one image-encoder pass, not two.
        labels.append(model(encoded).argmax(-1).cpu() if predicted_labels else batch_labels.cpu())
    if not features:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels).long()


def fit_open_set(model: Any, data: Any) -> OpenSetFit | None:
    """The familiarity reference and threshold of ``model`` (a method being tested) from ``data`` (its
    data module); None without at least 2 training images.
    """
    # Twice what the reference keeps: a large training set or pool is not encoded whole at test time.
    most = 2 * MAX_REFERENCE_PER_CLASS * len(model.class_names)
    loader = data.reference_dataloader(most) if data is not None else None
    if loader is None:
        return None
    features, labels = _encode(model, loader, predicted_labels=model.learns_from == "unlabelled")
    if len(features) < 2:
        return None
    kept = subsample_reference(labels)
    left_out = torch.ones(len(features), dtype=torch.bool).index_fill_(0, kept, False)
    reference, reference_labels = features[kept], labels[kept]
    score = Familiarity(reference, reference_labels, len(model.class_names))
    held_out = [held_out_familiarity(reference, reference_labels), score(features[left_out])]
    sources = [f"{len(reference)} training images, each against the others"]
    if left_out.any():
        sources.append(f"{int(left_out.sum())} training images left out of the reference")
    validation = data.calibration_dataloader()
    if validation is not None:
        validation_features, _ = _encode(model, validation, predicted_labels=False)
        if len(validation_features):
            held_out.append(score(validation_features))
            sources.insert(0, f"{len(validation_features)} validation images")
    threshold = fit_threshold(torch.cat(held_out))
    record = OpenSet(threshold, "held-out known images: " + ", ".join(sources), len(reference))
    return record, reference, reference_labels


def save_open_set(run_folder: Path, fit: OpenSetFit) -> Path:
    """Writes the fitted rule into the run folder, for export."""
    record, reference, labels = fit
    path = run_folder / OPEN_SET_FILE
    tensors = {"reference": reference.contiguous(), "labels": labels.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"open_set": json.dumps(record.to_dict())}))
    return path


def load_open_set(run_folder: Path) -> OpenSetFit | None:
    """The rule a test of the run fitted, or None when it has none (a run tested by an older promptlab)."""
    from safetensors import safe_open

    path = run_folder / OPEN_SET_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        record = OpenSet.from_dict(json.loads((f.metadata() or {})["open_set"]))
    tensors = load_file(str(path))
    return record, tensors["reference"], tensors["labels"]
