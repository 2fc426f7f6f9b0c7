"""Loading a weights file into a backbone, refusing weights of another architecture.

open_clip's ``load_checkpoint`` resizes positional embeddings that do not fit and only logs it, so
a file of another model (e.g. 16 text positions into a 77-position architecture) loads and runs at
a worse accuracy. Here every tensor's shape is compared first, and missing or unexpected tensors
are refused, each with one sentence naming the backbone, the file and the first offending tensor.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import open_clip
from open_clip.factory import load_state_dict
from torch import nn

from promptlab.backbone.source import BackboneError


def load_checked_weights(model: nn.Module, weights_file: str, backbone: str) -> None:
    """Loads ``weights_file`` into ``model`` (an open_clip CLIP) after checking that it fits.

    Raises:
        BackboneError: unreadable file, TorchScript archive, or a tensor that is missing, extra or
            shaped for another architecture.
    """
    if Path(weights_file).suffix in (".npz", ".npy"):  # big_vision weights: open_clip converts them
        open_clip.load_checkpoint(model, weights_file)
        return
    if _is_torchscript(weights_file):
        raise BackboneError(
            f"Weights file {weights_file!r} is a TorchScript archive (OpenAI's original .pt), which promptlab does "
            "not load because loading it can run code; use the safetensors weights of the same model "
            "(open_clip downloads them for pretrained: openai)."
        )
    try:
        state = load_state_dict(weights_file)  # safetensors, or torch.load(weights_only=True)
    except Exception as error:  # safetensors and torch.load raise many types for bad files
        raise BackboneError(
            f"Cannot read weights file {weights_file!r} for backbone {backbone!r} ({type(error).__name__}); "
            "pass a .safetensors or PyTorch state-dict file."
        ) from error
    expected = model.state_dict()
    for key, tensor in expected.items():
        found = state.get(key)
        # logit_scale may be a scalar or a 1-element tensor; open_clip reshapes that.
        if found is not None and found.shape != tensor.shape and found.numel() != tensor.numel():
            raise _does_not_fit(
                weights_file,
                backbone,
                f"tensor {key!r} has shape {tuple(found.shape)} in the file and "
                f"{tuple(tensor.shape)} in the architecture",
            )
    try:
        incompatible = open_clip.load_checkpoint(model, weights_file, strict=False)
    except RuntimeError as error:  # a size mismatch in a tensor open_clip renamed on the way
        raise _does_not_fit(weights_file, backbone, str(error).strip().splitlines()[-1].strip()) from error
    if incompatible.missing_keys:
        raise _does_not_fit(weights_file, backbone, _first("lacks tensor", incompatible.missing_keys))
    if incompatible.unexpected_keys:
        raise _does_not_fit(
            weights_file, backbone, _first("has tensor", incompatible.unexpected_keys, "that the architecture lacks")
        )


def _first(verb: str, keys: list[str], tail: str = "") -> str:
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"it {verb} {keys[0]!r}{' ' + tail if tail else ''}{more}"


def _does_not_fit(weights_file: str, backbone: str, detail: str) -> BackboneError:
    return BackboneError(
        f"Weights file {weights_file!r} does not fit backbone {backbone!r}: {detail}; pass the weights of that "
        "architecture or the backbone the weights were trained as."
    )


def _is_torchscript(path: str) -> bool:
    """True for a TorchScript zip archive (it holds code/ and constants.pkl)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()[:200])
