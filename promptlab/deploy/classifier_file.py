"""The exported classifier file: one safetensors file holding everything a deployment needs.

Format version 3, written by this promptlab for files with LoRA deltas, deep prompts or a conditional
head; the others are written as version 2, which earlier promptlab versions read. Safetensors metadata
holds two strings: ``promptlab`` (the JSON below) and ``digest`` (SHA-256 over that JSON and every
tensor's name, shape and bytes, so that a modified file is refused). Loading never runs code.

JSON metadata::

    format          "promptlab-classifier"
    format_version  3 or 2 (see above)
    head            {"kind": ..., ...its numbers}, see promptlab.deploy.heads:
                      linear       scale               logits = scale * f @ weight.T (+ bias)
                      mixture      top_k, scale        router picks top_k experts per image (MoCoOp)
                      cache        alpha, beta, scale  zero-shot + alpha * cache model (Tip-Adapter)
                      conditional  scale               version 3: the text tower encodes each image's
                                                       prompts, its context shifted by a meta-net (CoCoOp)
    class_names     [C names]
    preprocess      image size, mean, std, interpolation, resize mode
    backbone        model_name, model_cfg (open_clip's architecture config, so that models outside
                    open_clip's list rebuild anywhere; absent in earlier files), pretrained,
                    weights_sha256, embed_dim, embedded (image tower in the file), and the changes a
                    method made to the image tower:
                      visual_prompts  P prompt tokens inserted after the CLS token (NoLA); 0 for none
                      lora            version 3: low-rank deltas (CLIP-LoRA): rank, alpha, scaling =
                                      alpha / sqrt(rank), blocks (null: every block), projections (some
                                      of q, k, v, o); null or absent for none
                      deep_prompts    version 3: depth J and tokens n of deep prompts (MaPLe); null or
                                      absent for none
    calibration     temperature (probabilities are softmax(logits / T)), fitted_on (a sentence),
                    num_images, ece_before, ece_after (test ECE with T = 1 and with T; null if unmeasured);
                    absent in version 1 files: T = 1
    reject_below    answer "none of these" below this calibrated top probability (null: never)
    open_set        the familiarity rule of "none of these" (promptlab.deploy.open_set): unfamiliar_below (the
                    threshold), fitted_on (a sentence), reference_images, keep, score; null or absent for none
                    (older readers ignore it and its tensors)
    method, hparams, metrics, data_version, created

Tensors (float32)::

    head.weight (C, D), head.bias (C,)                        linear (bias optional)
    head.experts (E, C, D), head.router_weight (E, D),
    head.router_bias (E,)                                      mixture
    head.weight (C, D), head.keys (N, D), head.values (N, C)   cache
    head.context (n_ctx, width), head.meta_weight1 (D/16, D),
    head.meta_bias1, head.meta_weight2 (width, D/16),
    head.meta_bias2, head.start (1, width),
    head.class_tokens (C, S, width), head.pool_index (C,)      conditional (S: tokens after the context,
                                                               up to the last EOT)
    visual.*                                                   the image tower, when embedded
                                                               (visual.visual_prompts (P, width))
    lora.{block}.{projection}.A (r, width), .B (width, r)      LoRA deltas of the image tower, added as
                                                               scaling * B @ A into the block's q, k, v
                                                               slices of in_proj_weight (o: out_proj)
                                                               when the classifier is loaded
    deep_prompts (J, n, width)                                 the image tower's deep prompt tokens: row 0
                                                               appended after the patch tokens, row i in
                                                               their place before block i
    text.*                                                     the text tower, when embedded and the head
                                                               runs it (conditional)
    open_set.reference (N, D), open_set.labels (N,) int64      normalised training-image features and their
                                                               classes: the familiarity's reference

Version 1 files (``class_features`` (C, D) or (E, C, D), ``router.weight`` / ``router.bias``,
``logit_scale``; the head implied by the keys present, MoCoOp's ``top_k`` in ``hparams``) are read
by converting them to version 2 in :func:`upgrade_v1`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from promptlab.deploy.file_format import sniff, what_it_is
from promptlab.errors import UserError
from promptlab.files import atomic_write

FORMAT_NAME = "promptlab-classifier"
FORMAT_VERSION = 3  # the newest this promptlab reads and writes


def required_version(meta: dict) -> int:
    """The oldest format version that holds ``meta``: 3 with LoRA deltas, deep prompts or a conditional
    head, else 2.
    """
    backbone = meta.get("backbone", {})
    newer = backbone.get("lora") or backbone.get("deep_prompts") or meta.get("head", {}).get("kind") == "conditional"
    return 3 if newer else 2


class ClassifierFileError(UserError):
    """A classifier file is unreadable, modified, or does not fit the backbone; the message says what to do."""


def _digest(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().cpu()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def write_classifier_file(
    path: str | Path, meta: dict, tensors: dict[str, torch.Tensor], format_version: int | None = None
) -> Path:
    """Saves tensors and metadata with an integrity digest, atomically; returns the path.

    Args:
        path: the file to write.
        meta: the JSON metadata (see the module docstring); ``format`` and ``format_version`` are added.
        tensors: the head's tensors and, when embedded, the image tower's.
        format_version: the oldest version that holds ``meta`` unless given (tests write older versions,
            to check that they still load).
    """
    path = Path(path)
    meta = {"format": FORMAT_NAME, "format_version": format_version or required_version(meta), **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"promptlab": json.dumps(meta), "digest": _digest(meta, tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def upgrade_v1(meta: dict, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A version 1 file's content in the version 2 layout (see the module docstring)."""
    tensors = dict(tensors)
    features = tensors.pop("class_features")
    scale = float(tensors.pop("logit_scale").reshape(-1)[0])
    if "router.weight" in tensors:
        head = {"kind": "mixture", "top_k": int(meta.get("hparams", {}).get("top_k", 1)), "scale": scale}
        tensors |= {
            "head.experts": features,
            "head.router_weight": tensors.pop("router.weight"),
            "head.router_bias": tensors.pop("router.bias"),
        }
    else:
        head = {"kind": "linear", "scale": scale}
        tensors["head.weight"] = features
    prompts = tensors.get("visual.visual_prompts")
    backbone = {**meta["backbone"], "visual_prompts": 0 if prompts is None else int(prompts.shape[0])}
    return {**meta, "format_version": 2, "head": head, "backbone": backbone}, tensors


def read_classifier_file(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Loads and verifies a classifier file.

    Raises:
        ClassifierFileError: missing, truncated, not a promptlab classifier, or modified after export.
    """
    path = Path(path)
    if not path.is_file():
        raise ClassifierFileError(f"Classifier file {str(path)!r} not found; check the path.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        kind = sniff(path)
        if kind == "onnx":
            raise ClassifierFileError(
                f"{str(path)!r} is an ONNX model; load it with OnnxClassifier (promptlab classify and serve take it "
                "as it is)."
            ) from error
        if kind != "safetensors":
            raise ClassifierFileError(
                f"{str(path)!r} is {what_it_is(kind)}, not a classifier file; pass one written by `promptlab export`."
            ) from error
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
    try:
        return upgrade_v1(meta, tensors) if meta.get("format_version", 1) == 1 else (meta, tensors)
    except (KeyError, TypeError, IndexError) as error:
        raise ClassifierFileError(f"Classifier file {str(path)!r} is incomplete ({error}); export it again.") from error
