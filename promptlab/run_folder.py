"""The run folder: where a training run writes its reports, and the names of the files in it.

Every layer that writes or reads a run folder (the data module, the methods, export, the app's
workspace) takes the names from here. This module imports nothing of promptlab and no Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEST_METRICS_FILE = "test_metrics.json"
CONFUSION_JSON_FILE = "confusion_matrix.json"
CONFUSION_PNG_FILE = "confusion_matrix.png"
SPLIT_FILE_NAME = "fewshot_split.json"
DATA_INFO_FILE_NAME = "data.json"
OPEN_SET_FILE = "open_set.safetensors"  # the familiarity reference and threshold a test fitted


def run_dir(trainer: Any) -> Path | None:
    """The run folder that reports go to: the logger's folder, on the main process only.

    None without a logger (Lightning would otherwise fall back to the current directory).
    """
    if trainer is None or trainer.logger is None:
        return None
    log_dir = trainer.log_dir  # a broadcast under DDP: every process must ask, or rank 0 waits forever
    if not trainer.is_global_zero or not log_dir:
        return None
    return Path(log_dir)
