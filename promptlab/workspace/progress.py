"""A Lightning callback that writes the training progress to ``progress.json`` for the app to show."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from typing_extensions import override

from promptlab.files import atomic_write_bytes


def write_progress(run_dir: Path, **progress) -> None:
    """Replaces ``progress.json`` (atomically: the app may read it at any moment)."""
    atomic_write_bytes(Path(run_dir) / "progress.json", json.dumps(progress | {"time": time.time()}).encode())


class ProgressFile(L.Callback):
    """Writes stage, epoch, step, total steps and the last loss, at most twice a second.

    Args:
        run_dir: the app's run folder (``progress.json`` goes there).
    """

    def __init__(self, run_dir: str, min_interval_s: float = 0.5):
        self.run_dir = Path(run_dir)
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def _write(self, trainer: L.Trainer, stage: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        loss = trainer.callback_metrics.get("train/loss")
        write_progress(
            self.run_dir,
            stage=stage,
            epoch=trainer.current_epoch,
            max_epochs=trainer.max_epochs,
            step=trainer.global_step,
            total_steps=int(trainer.estimated_stepping_batches) if stage == "training" else None,
            loss=float(loss) if loss is not None else None,
        )

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "training", force=True)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self._write(trainer, "training")

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "training", force=True)

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "testing", force=True)
