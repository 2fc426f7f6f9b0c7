"""``promptlab classify``: images or folders through an exported classifier, to the terminal or a file."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

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
    device: str | None = None,
    output: str | None = None,
    no_progress: bool = False,
    decoder_log: str | None = None,
) -> int:
    """Classify images or folders of images (recursively) with an exported classifier file.

    Args:
        images: image files or folders of images (sub-folders included).
        classifier: file written by `promptlab export`.
        weights_path: local backbone weights, if the file does not embed them.
        top_k: classes shown per image.
        batch_size: images per image-encoder call.
        num_workers: image decoding processes (default: by device and cores, 0 on 2 CPU cores).
        reject_below: "none of these" below this top probability (default: the file's own).
        device: cpu or cuda (default: cuda when available).
        output: stream predictions to a .csv or .json file.
        no_progress: no progress bar.
        decoder_log: file for the image decoders' own warnings, kept off the terminal (default: one
            in the temp folder).

    Exit status:
        0 every image classified, 3 some files skipped (named on stderr), 1 nothing classified,
        2 a usage or input error.
    """
    if batch_size < 1 or (num_workers or 0) < 0 or top_k < 1:
        raise UserError("--batch_size and --top_k must be at least 1, --num_workers at least 0.")
    # Imported here, not at the top, so that `promptlab --help` does not import torch and open_clip.
    from promptlab.data.sources import prediction_samples
    from promptlab.deploy.classifier import Classifier
    from promptlab.deploy.classify import classify_to_output
    from promptlab.deploy.native_stderr import decoder_messages_to
    from promptlab.deploy.prediction import check_reject_below

    threshold = check_reject_below(reject_below, "--reject_below")
    loaded = Classifier.load(classifier, weights_path, device)
    paths = [sample.path for sample in prediction_samples(images)]
    log_path = Path(decoder_log or Path(tempfile.gettempdir()) / f"promptlab-classify-{os.getpid()}.log")
    with decoder_messages_to(log_path):
        unreadable = classify_to_output(
            loaded, paths, output, batch_size, num_workers, top_k, threshold, not no_progress
        )
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
