"""``promptlab classify``: images or folders through an exported classifier, to the terminal or a file."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Literal

from promptlab.errors import UserError

CLASSIFY_NOTHING, CLASSIFY_PARTIAL = 1, 3  # classify's exit status when files were skipped


def classify(
    images: list[str],
    *,
    classifier: str,
    weights_path: str | None = None,
    top_k: int = 3,
    batch_size: int = 64,
    num_workers: int | None = None,
    reject_below: float | None = None,
    unfamiliar_below: float | None = None,
    device: str | None = None,
    output: str | None = None,
    no_progress: bool = False,
    decoder_log: str | None = None,
    engine: Literal["local", "ray"] = "local",
    concurrency: int | None = None,
) -> int:
    """Classify images or folders of images (recursively) with an exported classifier file.

    Args:
        images: image files, folders of images (sub-folders included), CSV or Parquet lists of images
            (a column named path, or the only column; relative to the list's folder), or URIs
            (s3://, gs://, https://... through fsspec and its package for the scheme).
        classifier: a .safetensors or .onnx file written by `promptlab export` (.onnx runs with
            onnxruntime, also in the ONNX-only install).
        weights_path: local backbone weights, if the file does not embed them.
        top_k: classes shown per image.
        batch_size: images per image-encoder call.
        num_workers: image decoding processes (default: by device and cores, 0 on 2 CPU cores).
        reject_below: "none of these" below this top probability (default: the file's own).
        unfamiliar_below: "none of these" below this familiarity, how much an image looks like the
            training images (-2 to 2; default: the threshold fitted at export; -2 turns it off).
        device: cpu or cuda (default: cuda when available).
        output: stream predictions to a .csv, .json or .parquet file.
        no_progress: no progress bar.
        decoder_log: file for the image decoders' own warnings, kept off the terminal (default: one
            in the temp folder).
        engine: local (this process) or ray (Ray Data: an actor pool on the cluster at RAY_ADDRESS, or
            a local one; install with pip install 'promptlab-clip[ray]').
        concurrency: actors in the ray engine's pool (default: one per GPU, else 2).

    Exit status:
        0 every image classified, 3 some files skipped (named on stderr), 1 nothing classified,
        2 a usage or input error.
    """
    if batch_size < 1 or (num_workers or 0) < 0 or top_k < 1:
        raise UserError("--batch_size and --top_k must be at least 1, --num_workers at least 0.")
    # Imported here, not at the top, so that `promptlab --help` imports no image library; none of
    # these import torch, so an ONNX file is classified in the ONNX-only install.
    from promptlab.data.prediction_inputs import prediction_samples
    from promptlab.deploy.file_format import classifier_format
    from promptlab.deploy.native_stderr import decoder_messages_to
    from promptlab.deploy.prediction import check_reject_below, check_unfamiliar_below
    from promptlab.deploy.prediction_files import check_output, results_to_output

    if output:
        check_output(output)
    threshold = check_reject_below(reject_below, "--reject_below")
    unfamiliar = check_unfamiliar_below(unfamiliar_below, "--unfamiliar_below")
    file_format = classifier_format(classifier)
    paths = [sample.path for sample in prediction_samples(images)]
    if file_format == "onnx" and weights_path:
        raise UserError("--weights_path is for .safetensors classifiers; an ONNX file holds its image encoder.")
    if engine == "ray":
        from promptlab.deploy.ray_engine import ray_classify_files

        results = ray_classify_files(
            classifier,
            paths,
            batch_size,
            concurrency,
            top_k,
            threshold,
            unfamiliar,
            weights_path,
            device,
            not no_progress,
        )
    elif file_format == "onnx":
        from promptlab.deploy.onnx_runtime import OnnxClassifier

        results = OnnxClassifier(classifier).classify_files(
            paths, batch_size, top_k, threshold, not no_progress, unfamiliar
        )
    else:
        from promptlab.deploy.classifier import Classifier
        from promptlab.deploy.classify import classify_files

        loaded = Classifier.load(classifier, weights_path, device)
        results = classify_files(loaded, paths, batch_size, num_workers, top_k, threshold, not no_progress, unfamiliar)
    log_path = Path(decoder_log or Path(tempfile.gettempdir()) / f"promptlab-classify-{os.getpid()}.log")
    with decoder_messages_to(log_path):
        unreadable = results_to_output(results, output)
    if log_path.is_file() and log_path.stat().st_size:
        lines = len(log_path.read_bytes().splitlines())
        print(f"The image decoders' own messages ({lines} lines) are in {log_path}", file=sys.stderr)
    elif not decoder_log:
        log_path.unlink(missing_ok=True)
    if unreadable:
        print(f"Skipped {len(unreadable)} unreadable file(s):", file=sys.stderr)
        for message in unreadable:
            print(f"  {message}", file=sys.stderr)
    if not unreadable:
        return 0
    return CLASSIFY_NOTHING if len(unreadable) == len(paths) else CLASSIFY_PARTIAL
