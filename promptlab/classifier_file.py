"""The exported classifier file: one safetensors file holding everything a deployment needs.

Tensors: ``class_features`` (C, D), ``logit_scale`` and, when embedded, the image tower's weights
as ``visual.*``. Metadata (JSON under the ``promptlab`` key): class names, preprocessing, backbone
reference and weights checksum, method and hyper-parameters, test metrics, data version, and a
SHA-256 digest over all of it so that a modified file is refused. Loading never runs code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_NAME = "promptlab-classifier"
FORMAT_VERSION = 1


class ClassifierFileError(ValueError):
    """A classifier file is unreadable, modified, or does not fit the backbone; the message says what to do."""


def _digest(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().cpu()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def write_classifier_file(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Saves tensors and metadata with an integrity digest; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"promptlab": json.dumps(meta), "digest": _digest(meta, tensors)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.chmod(0o644)
    tmp.replace(path)  # never leave a half-written classifier behind
    return path


def read_classifier_file(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Loads and verifies a classifier file.

    Raises:
        ClassifierFileError: missing, truncated, not a promptlab classifier, or modified after export.
    """
    path = Path(path)
    if not path.is_file():
        raise ClassifierFileError(f"Classifier file {str(path)!r} does not exist; check the path.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ClassifierFileError(
            f"Classifier file {str(path)!r} is truncated or not a safetensors file ({error}); export it again."
        ) from error
    try:
        meta = json.loads(header["promptlab"])
        assert meta.get("format") == FORMAT_NAME
    except (KeyError, ValueError, AssertionError) as error:
        raise ClassifierFileError(
            f"{str(path)!r} is not a promptlab classifier file; create one with `promptlab export`."
        ) from error
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ClassifierFileError(
            f"Classifier file {str(path)!r} has format version {meta['format_version']}, newer than this promptlab "
            f"reads ({FORMAT_VERSION}); upgrade promptlab."
        )
    if header.get("digest") != _digest(meta, tensors):
        raise ClassifierFileError(
            f"Classifier file {str(path)!r} was modified after export (its checksum does not match); "
            "export it again from the run."
        )
    return meta, tensors
