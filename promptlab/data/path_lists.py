"""Lists of images in a table: a CSV or Parquet file with one path or URI per row (imports no torch).

The column is the one named ``path``, ``uri``, ``image`` or ``file`` (any case), or the only one; a
CSV of one column without a header is read whole. Relative paths are relative to the list's folder;
URIs are kept as they are. Entries are not opened here: a missing or unreadable image is that row's
refusal when it is decoded, never the whole list's.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from promptlab.data.dataset_error import DatasetError
from promptlab.data.images import IMAGE_EXTENSIONS
from promptlab.data.uris import is_uri

log = logging.getLogger(__name__)

PATH_LIST_SUFFIXES = frozenset({".csv", ".parquet"})
PATH_COLUMNS = ("path", "uri", "image", "file")


def is_path_list(path: Path) -> bool:
    """True for a .csv or .parquet file (a list of images, not an image)."""
    return path.is_file() and path.suffix.lower() in PATH_LIST_SUFFIXES


def read_path_list(list_file: Path) -> list[str]:
    """The images a CSV or Parquet list names, in row order, relative paths made absolute.

    Raises:
        DatasetError: no column to read, an unreadable file, or no pyarrow for a Parquet file.
    """
    parquet = list_file.suffix.lower() == ".parquet"
    entries = _parquet_column(list_file) if parquet else _csv_column(list_file)
    kept = [entry.strip() for entry in entries if entry is not None and entry.strip()]
    if len(kept) < len(entries):
        log.warning("Skipped %d empty row(s) in %s.", len(entries) - len(kept), list_file)
    folder = list_file.resolve().parent
    return [entry if is_uri(entry) else str(folder / entry) for entry in kept]


def _column(names: list[str], list_file: Path) -> int:
    lowered = [name.strip().lower() for name in names]
    for wanted in PATH_COLUMNS:
        if wanted in lowered:
            return lowered.index(wanted)
    if len(names) == 1:
        return 0
    raise DatasetError(
        f"Image list {str(list_file)!r} has columns {names} and none is named {', '.join(PATH_COLUMNS)}; "
        "name the column of paths 'path'."
    )


def _looks_like_an_image(text: str) -> bool:
    return is_uri(text) or Path(text).suffix.lower() in IMAGE_EXTENSIONS


def _csv_column(list_file: Path) -> list[str | None]:
    try:
        with list_file.open(newline="", encoding="utf-8-sig") as file:
            rows = [row for row in csv.reader(file) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"Cannot read image list {str(list_file)!r} ({error}); save it as UTF-8 CSV.") from error
    if not rows:
        return []
    if len(rows[0]) == 1 and _looks_like_an_image(rows[0][0]):
        return [row[0] for row in rows]  # one column, no header
    column = _column(rows[0], list_file)
    return [row[column] if column < len(row) else "" for row in rows[1:]]


def _parquet_column(list_file: Path) -> list[str | None]:
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise DatasetError(
            f"Reading the image list {str(list_file)!r} needs pyarrow: install it with pip install pyarrow."
        ) from error
    try:
        names = parquet.read_schema(list_file).names
        column = names[_column(names, list_file)]
        values = parquet.read_table(list_file, columns=[column]).column(column).to_pylist()
    except DatasetError:
        raise
    except Exception as error:  # pyarrow's errors for a damaged or non-Parquet file
        raise DatasetError(f"Cannot read image list {str(list_file)!r} ({error}); is it a Parquet file?") from error
    return [None if value is None else str(value) for value in values]
