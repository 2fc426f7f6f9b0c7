"""Prediction tables: (path, prediction) rows streamed to a CSV or JSON file or to the terminal (imports no torch)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from promptlab.deploy.prediction import NONE_OF_THESE, Prediction

FileResult = tuple[str, Prediction] | str
"""What a batched classification yields per file: (path, prediction), or the reason it was unreadable."""


class PredictionWriter:
    """Streams prediction rows (path, label, probability, top_k, none_of_these, rejected_by, familiarity)
    to a CSV or JSON file
    chosen by its suffix, one row at a time, so memory stays flat for any number of images. The rows
    go to a temporary file that replaces ``path`` on a clean close: a run that fails leaves no half file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.json = self.path.suffix.lower() == ".json"
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._file = self._tmp.open("w", newline="")
        if self.json:
            self._file.write("[")
        else:
            self._csv = csv.writer(self._file)
            self._csv.writerow(["path", "label", "probability", "top_k", "none_of_these", "rejected_by", "familiarity"])

    def write(self, path: str, prediction: Prediction) -> None:
        """Appends one row."""
        if self.json:
            row = {"path": path, **prediction.to_dict()}
            self._file.write(("," if self.count else "") + "\n  " + json.dumps(row))
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

    def close(self, keep: bool = True) -> None:
        """Finishes the file and moves it into place (``keep``), or drops it."""
        if self.json:
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


def write_predictions(rows: list[tuple[str, Prediction]], path: Path) -> None:
    """Writes (image path, prediction) rows as CSV or JSON by the file suffix."""
    with PredictionWriter(path) as writer:
        for image_path, prediction in rows:
            writer.write(image_path, prediction)


def results_to_output(results: Iterable[FileResult], output: str | None) -> list[str]:
    """Streams predictions to ``output`` (a .csv or .json file) or stdout; returns the unreadable files' reasons."""
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
