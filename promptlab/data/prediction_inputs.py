"""The files, folders, image lists (CSV or Parquet) and URIs given to predict or classify, as a list
of images (imports no torch).
"""

from __future__ import annotations

from pathlib import Path

from promptlab.data.dataset_error import DatasetError
from promptlab.data.images import IMAGE_EXTENSIONS, is_image_file, list_images
from promptlab.data.path_lists import PATH_LIST_SUFFIXES, is_path_list, read_path_list
from promptlab.data.sampling import Sample
from promptlab.data.uris import is_uri


def prediction_samples(paths: list[str]) -> list[Sample]:
    """Files, folders, CSV or Parquet lists of images and URIs -> unlabelled samples (label -1) with
    absolute paths.
    """
    samples = []
    for text in paths:
        entry = Path(text)
        if is_uri(text):
            samples.append(Sample(text, -1, ""))
        elif is_path_list(entry):
            samples += [Sample(path, -1, "") for path in read_path_list(entry)]
        elif entry.is_dir():
            samples += [Sample(str(p.resolve()), -1, "") for p in list_images(entry, recursive=True)]
        elif entry.is_file() and is_image_file(entry):
            samples.append(Sample(str(entry.resolve()), -1, ""))
        elif entry.is_file():
            raise DatasetError(
                f"Prediction input {str(entry)!r} has an extension promptlab does not read; "
                f"use one of {', '.join(sorted(IMAGE_EXTENSIONS))}, or {' or '.join(sorted(PATH_LIST_SUFFIXES))} "
                "for a list of images."
            )
        else:
            raise DatasetError(f"Prediction input {str(entry)!r} is not an image file or folder; check the path.")
    if not samples:
        raise DatasetError("No images to predict; pass image files or folders with --data.predict_files.")
    return samples
