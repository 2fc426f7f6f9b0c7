"""Prediction tables: (path, prediction) rows streamed to a CSV, JSON or Parquet file or to the terminal
(imports no torch).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from promptlab.deploy.prediction import NONE_OF_THESE, Prediction
from promptlab.errors import UserError

FileResult = tuple[str, Prediction] | str
"""What a batched classification yields per file: (path, prediction), or the reason it was unreadable."""


COLUMNS = ("path", "label", "probability", "top_k", "none_of_these", "rejected_by", "familiarity")
OUTPUT_SUFFIXES = (".csv", ".json", ".parquet")
PARQUET_ROWS_PER_GROUP = 8192  # rows buffered before a row group is written: memory stays flat


class PredictionWriter:
    """Streams prediction rows (the :data:`COLUMNS`) to a CSV, JSON or Parquet file chosen by its
    suffix, so memory stays flat for any number of images. The rows go to a temporary file that
    replaces ``path`` on a clean close: a run that fails leaves no half file.

    CSV writes ``top_k`` as ``name:probability;...``; JSON and Parquet keep it a list of
    ``{label, probability}`` and leave ``rejected_by`` and ``familiarity`` null where there are none.

    Raises:
        PredictionOutputError: another suffix, or Parquet without pyarrow.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.kind = check_output(self.path)
        if self.kind == ".parquet":
            self._parquet = _parquet_module(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._rows: list[dict] = []
        self._parquet_writer: Any = None
        self._file: Any = None  # the CSV or JSON text file; Parquet goes through its writer
        if self.kind != ".parquet":
            self._file = self._tmp.open("w", newline="")
        if self.kind == ".json":
            self._file.write("[")
        elif self.kind == ".csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(COLUMNS)

    def write(self, path: str, prediction: Prediction) -> None:
        """Appends one row."""
        if self.kind == ".json":
            row = {"path": path, **prediction.to_dict()}
            self._file.write(("," if self.count else "") + "\n  " + json.dumps(row))
        elif self.kind == ".parquet":
            self._rows.append({"path": path, **prediction.to_dict()})
            if len(self._rows) >= PARQUET_ROWS_PER_GROUP:
                self._flush_parquet()
        else:
            top_k = ";".join(f"{name}:{prob:.4f}" for name, prob in prediction.top_k)
            familiarity = "" if prediction.familiarity is None else f"{prediction.familiarity:.4f}"
            self._csv.writerow(
                [
                    path,
                    prediction.label,
                    f"{prediction.probability:.6f}",
                    top_k,
                    prediction.none_of_these,
                    prediction.rejected_by or "",
                    familiarity,
                ]
            )
        self.count += 1

    def _flush_parquet(self) -> None:
        pyarrow = self._parquet["pyarrow"]
        table = pyarrow.Table.from_pylist(self._rows, schema=self._parquet["schema"])
        if self._parquet_writer is None:
            self._parquet_writer = self._parquet["parquet"].ParquetWriter(self._tmp, self._parquet["schema"])
        self._parquet_writer.write_table(table)
        self._rows = []

    def close(self, keep: bool = True) -> None:
        """Finishes the file and moves it into place (``keep``), or drops it."""
        if self.kind == ".parquet":
            if keep and (self._rows or self._parquet_writer is None):
                self._flush_parquet()  # an empty table still has its columns
            if self._parquet_writer is not None:
                self._parquet_writer.close()
        else:
            if self.kind == ".json":
                self._file.write("\n]\n")
            self._file.close()
        if keep:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


class PredictionOutputError(UserError):
    """An output file promptlab cannot write predictions to."""


def check_output(path: str | Path) -> str:
    """The output's kind (``.csv``, ``.json`` or ``.parquet``), checked before any work starts.

    Raises:
        PredictionOutputError: another suffix, or Parquet without pyarrow.
    """
    kind = Path(path).suffix.lower()
    if kind not in OUTPUT_SUFFIXES:
        names = ", ".join(OUTPUT_SUFFIXES)
        raise PredictionOutputError(f"Cannot write predictions to {str(path)!r}: name a {names} file.")
    if kind == ".parquet":
        _parquet_module(Path(path))
    return kind


def _parquet_module(path: Path) -> dict[str, Any]:
    """pyarrow, its Parquet module and the prediction table's schema; one sentence without pyarrow."""
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise PredictionOutputError(
            f"Writing {str(path)!r} needs pyarrow: install it with pip install pyarrow, or name a .csv file."
        ) from error
    ranked = pyarrow.struct([("label", pyarrow.string()), ("probability", pyarrow.float64())])
    schema = pyarrow.schema(
        [
            ("path", pyarrow.string()),
            ("label", pyarrow.string()),
            ("probability", pyarrow.float64()),
            ("top_k", pyarrow.list_(ranked)),
            ("none_of_these", pyarrow.bool_()),
            ("rejected_by", pyarrow.string()),
            ("familiarity", pyarrow.float64()),
        ]
    )
    return {"pyarrow": pyarrow, "parquet": parquet, "schema": schema}


def write_predictions(rows: list[tuple[str, Prediction]], path: Path) -> None:
    """Writes (image path, prediction) rows as CSV, JSON or Parquet by the file suffix."""
    with PredictionWriter(path) as writer:
        for image_path, prediction in rows:
            writer.write(image_path, prediction)


def results_to_output(results: Iterable[FileResult], output: str | None) -> list[str]:
    """Streams predictions to ``output`` (a .csv, .json or .parquet file) or stdout; returns the
    unreadable files' reasons.
    """
    writer = PredictionWriter(output) if output else None
    unreadable: list[str] = []
    try:
        for result in results:
            if isinstance(result, str):
                unreadable.append(result)
            elif writer is not None:
                writer.write(*result)
            else:
                print(prediction_line(*result))
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    if writer is not None:
        writer.close()
        print(f"Wrote {writer.count} predictions to {output}")
    return unreadable


def prediction_line(path: str, prediction: Prediction) -> str:
    """One tab-separated line: path, label (or "none of these" with the rule that said so), probability,
    the other top classes.
    """
    others = ", ".join(f"{name} {p:.1%}" for name, p in prediction.top_k[1:])
    label = prediction.label
    if prediction.none_of_these:
        label = f"{NONE_OF_THESE} ({prediction.rejected_by}; best: {prediction.label})"
    return f"{path}\t{label}\t{prediction.probability:.1%}" + (f"\t({others})" if others else "")
