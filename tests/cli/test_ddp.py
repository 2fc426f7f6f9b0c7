"""Data-parallel training through Lightning's DDP strategy, on 2 CPU processes (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def fit(image_folder: Path, out: Path, *args: str) -> Path:
    """Runs ``promptlab fit`` in a subprocess (DDP launches its second process from the command line)."""
    command = [
        sys.executable, "-m", "promptlab", "fit", "-c", "configs/tiny/coop.yaml",
        "--data.root", str(image_folder), "--data.cache_views", "1", "--data.cache_dir", str(out / "cache"),
        "--trainer.max_epochs", "5", "--trainer.logger.init_args.save_dir", str(out / "runs"),
        "--seed_everything", "7", *args,
    ]  # fmt: skip
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "runs" / "lightning_logs" / "version_0"


def test_ddp_matches_single_process_training(image_folder, tmp_path):
    # Full-batch steps (12 training images): one process with batch 12 and two with 6 each see the
    # same average gradient, so the learned context must agree up to floating-point rounding.
    single = fit(image_folder, tmp_path / "single", "--data.batch_size", "12")
    ddp = fit(
        image_folder, tmp_path / "ddp", "--data.batch_size", "6",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    contexts = [
        torch.load(next((run / "checkpoints").glob("*.ckpt")), weights_only=True)["state_dict"]["ctx"]
        for run in (single, ddp)
    ]
    assert contexts[0].abs().mean() > 0
    assert torch.allclose(contexts[0], contexts[1], atol=1e-5)
    reports = [json.loads((run / "test_metrics.json").read_text()) for run in (single, ddp)]
    assert reports[0]["accuracy"] == reports[1]["accuracy"]  # every test image counted once, none repeated
    confusion = [json.loads((run / "confusion_matrix.json").read_text()) for run in (single, ddp)]
    assert confusion[0] == confusion[1]
    # The feature cache was filled once and shared: one file per image of the split, and one more per
    # training image for its test view (the familiarity reference of "none of these").
    split = json.loads((ddp / "fewshot_split.json").read_text())
    n_files = sum(len(split[s]) for s in ("train", "val", "test")) + len(split["train"])
    assert len(list((tmp_path / "ddp" / "cache").rglob("*.safetensors"))) == n_files
