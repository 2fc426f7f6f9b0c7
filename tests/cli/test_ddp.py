"""Data-parallel training through Lightning's DDP strategy, on 2 CPU processes (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


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


def test_two_nodes_of_one_process_match_one_node_of_two(image_folder, tmp_path):
    """``--trainer.num_nodes 2`` on loopback: two ``promptlab fit`` processes, each a node with one
    process, joined by the environment variables torchrun or a cluster sets (MASTER_ADDR, MASTER_PORT,
    NODE_RANK, WORLD_SIZE), learn what one node with two processes learns."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--data.batch_size", "6"]
    one_node = fit(image_folder, tmp_path / "one_node", *ddp, "--trainer.devices", "2")
    out = tmp_path / "two_nodes"
    command = [
        sys.executable, "-m", "promptlab", "fit", "-c", "configs/tiny/coop.yaml",
        "--data.root", str(image_folder), "--data.cache_views", "1", "--data.cache_dir", str(out / "cache"),
        "--trainer.max_epochs", "5", "--trainer.logger.init_args.save_dir", str(out / "runs"),
        "--seed_everything", "7", *ddp, "--trainer.devices", "1", "--trainer.num_nodes", "2",
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            command,
            env=os.environ
            | {"PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            | {"NODE_RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for rank, node in enumerate(nodes):
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in stderr  # one process group of two
    two_nodes = out / "runs" / "lightning_logs" / "version_0"
    contexts = [
        torch.load(next((run / "checkpoints").glob("*.ckpt")), weights_only=True)["state_dict"]["ctx"]
        for run in (one_node, two_nodes)
    ]
    assert torch.allclose(contexts[0], contexts[1], atol=1e-6)
    reports = [json.loads((run / "test_metrics.json").read_text()) for run in (one_node, two_nodes)]
    assert reports[0]["accuracy"] == reports[1]["accuracy"]


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_nola_under_ddp_labels_its_pool_once_as_one_process_does(engine, image_folder, unlabelled_pool, tmp_path):
    """The main process alone runs stages 1-2 (one pass over the whole pool, one Ray job with the ray
    engine, one writer of the pseudo-labels file) and hands the other process its labels."""
    if engine == "ray":
        pytest.importorskip("ray.data")

    def fit_nola(out: Path, *args: str) -> tuple[Path, str]:
        command = [
            sys.executable, "-m", "promptlab", "fit", "-c", "configs/tiny/nola.yaml",
            "--data.root", str(image_folder), "--data.unlabelled", str(unlabelled_pool),
            "--trainer.logger.init_args.save_dir", str(out / "runs"), "--seed_everything", "7",
            "--data.engine", engine, "--data.ray_actors", "1", *args,
        ]  # fmt: skip
        env = os.environ | {"PYTHONWARNINGS": "ignore"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return out / "runs" / "lightning_logs" / "version_0", result.stderr

    single, _ = fit_nola(tmp_path / "single", "--data.batch_size", "8")
    ddp, log = fit_nola(
        tmp_path / "ddp", "--data.batch_size", "4",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    assert log.count("NoLA stages 1-2:") == 1, log[-3000:]
    labels = [load_file(str(run / "nola_pseudo_labels.safetensors")) for run in (single, ddp)]
    assert labels[0].keys() == labels[1].keys()
    for key in labels[0]:
        assert torch.equal(labels[0][key], labels[1][key]), key
    stages = [json.loads((run / "nola_stages.json").read_text()) for run in (single, ddp)]
    assert stages[0]["pool_label_agreement_stage1_vs_dino"] == stages[1]["pool_label_agreement_stage1_vs_dino"]
    assert 0 <= stages[1]["pool_agreement_final_vs_dino"] <= 1  # the main process's pass after training
