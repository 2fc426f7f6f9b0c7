"""k-NN accuracy of frozen image features on the toy tasks (train split as memory, test split as queries)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# toy-clip's preprocessing (OpenAI CLIP's mean and std); toy-dino, warm-started from it, shares it
MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) toy images in [0, 1] -> the input of toy-clip's (and toy-dino's) image tower."""
    return (images - MEAN.to(images.device)) / STD.to(images.device)


def load_split(data: Path, task: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) float images in [0, 1] and (N,) labels of one split of a toy task."""
    items = json.loads((data / "splits" / f"{task}.json").read_text())[split]
    images = np.stack([np.asarray(Image.open(data / "images" / path).convert("RGB")) for path, _, _ in items])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, torch.tensor([label for _, label, _ in items])


@torch.no_grad()
def knn_accuracy(encode: Callable[[torch.Tensor], torch.Tensor], data: Path, task: str, k: int = 10) -> float:
    """Cosine k-NN (majority vote) accuracy; ``encode`` maps [0, 1] images to (N, D) features."""
    train_images, train_labels = load_split(data, task, "train")
    test_images, test_labels = load_split(data, task, "test")
    memory = F.normalize(encode(train_images), dim=-1)
    queries = F.normalize(encode(test_images), dim=-1)
    neighbours = train_labels[(queries @ memory.T).topk(k, dim=1).indices]  # (N_test, k)
    votes = F.one_hot(neighbours, int(train_labels.max()) + 1).sum(1)
    return float((votes.argmax(1) == test_labels).float().mean())
