"""``promptlab export --quantize``: which images measure the int8 file's agreement (and calibrate a
static one), and the quantization of the written ONNX file in place.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import numpy as np

from promptlab.data.images import ImageLoadError, list_images, load_image
from promptlab.deploy.onnx_quantize import QuantizeError, quantize_classifier
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.run_folder import DATA_INFO_FILE_NAME, SPLIT_FILE_NAME

MAX_AGREEMENT_IMAGES = 512
MAX_CALIBRATION_IMAGES = 128
Quantize = Literal["int8", "int8-static"]


def _split_paths(run: Path, split: str) -> list[Path]:
    """A run's images of one split (its ``fewshot_split.json``), as files."""
    if not (run / SPLIT_FILE_NAME).is_file() or not (run / DATA_INFO_FILE_NAME).is_file():
        return []
    root = Path(json.loads((run / DATA_INFO_FILE_NAME).read_text())["image_root"])
    return [root / entry[0] for entry in json.loads((run / SPLIT_FILE_NAME).read_text()).get(split, [])]


def image_sets(
    run: str | None, split_paths: dict[str, list[Path]], folder: str | None
) -> tuple[list[Path], str, list[Path]]:
    """(images to measure agreement on, where they come from, calibration images) for a quantized export.

    Args:
        run: the run folder exported (its validation and training images).
        split_paths: ``{"val": [...], "train": [...]}`` of a config's data module, where exported from ``-c``.
        folder: ``--quantize_images``: a folder of images that wins over both.

    Raises:
        QuantizeError: no images to measure the agreement on.
    """
    if folder:
        images = list_images(Path(folder), recursive=True)
        return images, f"images of {folder}", images
    if run:
        split_paths = {split: _split_paths(Path(run), split) for split in ("val", "train")}
    val, train = split_paths.get("val", []), split_paths.get("train", [])
    if val or train:
        return (val or train), "validation images" if val else "training images", train or val
    raise QuantizeError(
        "An int8 export measures its agreement with float32 on images: pass --quantize_images FOLDER "
        "(images like those it will classify), or export from --run or -c with a validation split."
    )


def _arrays(classifier: OnnxClassifier, paths: list[Path], limit: int) -> np.ndarray:
    """Up to ``limit`` of ``paths`` (a seeded draw), decoded and preprocessed; unreadable ones skipped."""
    chosen = random.Random(0).sample(paths, limit) if len(paths) > limit else paths
    arrays = []
    for path in chosen:
        try:
            arrays.append(classifier.to_array(load_image(path)))
        except ImageLoadError:
            continue
    if not arrays:
        raise QuantizeError(
            f"None of the {len(chosen)} images for the int8 agreement could be read; pass --quantize_images."
        )
    return np.stack(arrays)


def quantize_written_file(
    path: Path, quantize: Quantize, run: str | None, split_paths: dict[str, list[Path]], folder: str | None
) -> str:
    """Replaces the float32 ONNX file at ``path`` by its int8 version; returns a line for the user."""
    if path.suffix.lower() != ".onnx":
        raise QuantizeError("--quantize writes an ONNX classifier: pass -o with a .onnx name.")
    images, images_from, calibration_paths = image_sets(run, split_paths, folder)
    fp32 = OnnxClassifier(path)
    measured = _arrays(fp32, images, MAX_AGREEMENT_IMAGES)
    mode: Literal["dynamic", "static"] = "static" if quantize == "int8-static" else "dynamic"
    calibration = _arrays(fp32, calibration_paths, MAX_CALIBRATION_IMAGES) if mode == "static" else None
    del fp32  # its session holds the file the quantized one replaces
    record = quantize_classifier(path, path, mode, measured, images_from, calibration)
    return (
        f"Quantized to int8 ({mode}): top-1 agreement with float32 {record['top1_agreement']:.1%} "
        f"on {record['agreement_images']}."
    )
