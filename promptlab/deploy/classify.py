"""Batched classification of image files with an exported torch classifier (``promptlab classify``).

Images are decoded and preprocessed by DataLoader worker processes while the main process runs the
image encoder on whole batches; predictions stream to the output as they come, so memory stays flat
whatever the number of files. A file that cannot be decoded (for any reason its decoder gives) is
that file's refusal, recorded and named at the end, never the run's end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from promptlab.data.images import ImageLoadError, load_image
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.prediction import Prediction, rank
from promptlab.deploy.progress import progress_bar


class ImageFiles(Dataset):
    """(preprocessed image, index, None) per readable file, (None, index, reason) per unreadable one."""

    def __init__(self, paths: list[str], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            return self.transform(load_image(self.paths[index])), index, None
        except ImageLoadError as error:  # every decoding failure, whatever the decoder raised
            return None, index, str(error)


@dataclass
class Batch:
    """A collated batch: the readable images, their indices, and (index, reason) of the unreadable ones."""

    images: torch.Tensor | None
    indices: list[int]
    failures: list[tuple[int, str]] = field(default_factory=list)


def collate(items: list[tuple[torch.Tensor | None, int, str | None]]) -> Batch:
    """Collates a batch, keeping the unreadable files' reasons apart."""
    readable = [(image, index) for image, index, _ in items if image is not None]
    failures = [(index, reason or "unreadable") for image, index, reason in items if image is None]
    images = torch.stack([image for image, _ in readable]) if readable else None
    return Batch(images, [index for _, index in readable], failures)


def default_workers(device: torch.device) -> int:
    """Decoding processes worth starting: on a GPU every core can decode while the GPU encodes; on the
    CPU the workers take cores from the encoder, so only about half of the cores beyond the first two
    decode (2 cores: none; there ``benchmarks/deploy.py`` measured 2 workers at 0.86x of none on toy-clip,
    0.62x on clip-tiny and 0.94x on ViT-B-16).
    """
    cores = os.cpu_count() or 1
    return min(8, cores) if device.type == "cuda" else max(0, cores // 2 - 1)


def classify_files(
    classifier: Classifier,
    paths: list[str],
    batch_size: int = 64,
    num_workers: int | None = None,
    top_k: int = 3,
    reject_below: float | None = None,
    progress: bool = True,
    unfamiliar_below: float | None = None,
) -> Iterator[tuple[str, Prediction] | str]:
    """Classifies image files in batches, yielding ``(path, prediction)`` per image in input order
    within each batch, and the reason (one sentence naming the file) for each unreadable file.

    Args:
        classifier: a loaded classifier.
        paths: image files.
        batch_size: images per image-encoder call.
        num_workers: decoding processes (0: in this process, as when everything fits one batch;
            default: :func:`default_workers`).
        top_k: classes per prediction.
        reject_below: "none of these" below this top probability (default: the classifier's own).
        progress: show a progress bar on stderr.
        unfamiliar_below: "none of these" below this familiarity (default: the classifier's own).
    """
    threshold = classifier.reject_below if reject_below is None else reject_below
    unfamiliar = classifier.unfamiliar_below if unfamiliar_below is None else unfamiliar_below
    workers = default_workers(classifier.device) if num_workers is None else num_workers
    workers = workers if len(paths) > batch_size else 0  # starting workers costs more than one batch
    loader = DataLoader(
        ImageFiles(paths, classifier.transform),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=classifier.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    with progress_bar(len(paths), "classify", progress) as bar:
        for batch in loader:
            for _, reason in batch.failures:
                yield reason
            if batch.images is not None:
                probabilities, familiarity = classifier.scores(batch.images)
                predictions = rank(probabilities, classifier.class_names, top_k, threshold, familiarity, unfamiliar)
                yield from ((paths[i], p) for i, p in zip(batch.indices, predictions, strict=True))
            bar.update(len(batch.indices) + len(batch.failures))
