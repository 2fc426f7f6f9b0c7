"""An app run's folder: the names of its files, its settings (``settings.json``) and its record
(``run.json``), shared by the app's pages, the run launcher and the background worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from promptlab.files import atomic_write_bytes
from promptlab.methods import DEFAULT_METHOD, CLIPClassifier, registered_methods
from promptlab.workspace.project import ProjectError

LOCK_FILE = ".training.lock"
RUN_FILE, SETTINGS_FILE, SPLIT_FILE, PROGRESS_FILE, LOG_FILE = (
    "run.json",
    "settings.json",
    "split.json",
    "progress.json",
    "log.txt",
)
LIGHTNING_DIR, CLASSIFIER_FILE = "lightning", "classifier.safetensors"
PREDICTIONS_FILE, INSPECTION_FILE = "predictions.json", "inspection.json"
BASELINE_DIR = "baseline"  # Lightning log folder of the zero-shot baseline on the same held-out images
ZERO_SHOT_CLASSIFIER_FILE = "classifier-zero-shot.safetensors"  # when zero-shot did better on validation
CHANGED_CLASSIFIER_FILE = "classifier-other-classes.safetensors"  # the run's classifier for other class names


@dataclass
class RunSettings:
    """What a user picks on the Train page (presets fill the advanced ones)."""

    method: str = DEFAULT_METHOD  # a key of promptlab.methods.registered_methods()
    backbone: str = "toy-clip"
    pretrained: str | None = "promptlab"
    weights_path: str | None = None  # local weights of the backbone, on machines that cannot download them
    epochs: int = 50
    batch_size: int = 32
    test_fraction: float = 0.3
    seed: int = 1
    options: dict = field(default_factory=dict)  # values of the method's own settings (its ``settings``)
    extra: dict = field(default_factory=dict)  # more model init_args, for researchers

    def __post_init__(self) -> None:
        methods = registered_methods()
        if self.method not in methods:
            raise ProjectError(f"Unknown method {self.method!r}; choose one of {', '.join(methods)}.")
        if not 0 < self.test_fraction < 1:
            raise ProjectError(f"The held-out share must be between 0 and 1 (got {self.test_fraction}).")
        if self.epochs < 1 or self.batch_size < 1:
            raise ProjectError("Epochs and batch size must be positive.")
        try:
            self.method_class.init_args_from_settings(self.options)
        except ValueError as error:
            raise ProjectError(str(error)) from error

    @property
    def method_class(self) -> type[CLIPClassifier]:
        """The registered method of ``method``."""
        return registered_methods()[self.method]


def now_utc() -> str:
    """The time now, as run records write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, content: dict) -> None:
    """Writes ``content`` as indented JSON, atomically."""
    atomic_write_bytes(path, json.dumps(content, indent=2).encode())


def read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it is missing or half-written."""
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def update_run(run_dir: Path, **changes) -> dict:
    """Merges ``changes`` into ``run.json`` (atomically) and returns the new content."""
    record = read_json(run_dir / RUN_FILE) | changes
    write_json(run_dir / RUN_FILE, record)
    return record
