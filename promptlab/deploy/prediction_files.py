"""Prediction tables: (path, prediction) rows streamed to a CSV or JSON file (imports no torch)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from promptlab.deploy.prediction import Prediction


class PredictionWriter:
    """Streams prediction rows (path, label, probability, top_k, none_of_these) to a CSV or JSON file
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
            self._csv.writerow(["path", "label", "probability", "top_k", "none_of_these"])

    def write(self, path: str, prediction: Prediction) -> None:
        """Appends one row."""
        if self.json:
            row = {"path": path, **prediction.to_dict()}
            self._file.write(("," if self.count else "") + "\n  " + json.dumps(row))
        else:
            top_k = ";".join(f"{name}:{prob:.4f}" for name, prob in prediction.top_k)
            self._csv.writerow(
                [path, prediction.label, f"{prediction.probability:.6f}", top_k, prediction.none_of_these]
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
