"""Dataset versioning with real DVC, offline: the documented recipe (docs/datasets.md) in a temporary
repository, and the project's own pipeline definition."""

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
}
ENV["GIT_COMMITTER_EMAIL"] = "t@t"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="DVC needs git")


def run(*args: str, cwd: Path) -> str:
    command = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def same_tree(a: Path, b: Path) -> bool:
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only or comparison.diff_files or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in comparison.common_dirs)


def test_add_push_remove_pull_restores_identical_data(tmp_path):
    repo, remote = tmp_path / "project", tmp_path / "remote"
    repo.mkdir()
    make_image_folder(repo / "data" / "my_pets", images_per_class=3)
    original = tmp_path / "original"
    shutil.copytree(repo / "data", original)

    run("git", "init", "-q", cwd=repo)
    run("dvc", "init", "-q", cwd=repo)
    run("dvc", "add", "data", cwd=repo)
    run("dvc", "remote", "add", "-d", "storage", str(remote), cwd=repo)
    run("git", "add", "data.dvc", ".gitignore", ".dvc/config", cwd=repo)
    run("git", "commit", "-qm", "data v1", cwd=repo)
    run("dvc", "push", cwd=repo)

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")  # as on a fresh clone: only the remote has the files
    run("dvc", "pull", cwd=repo)
    assert same_tree(original, repo / "data")
    assert "up to date" in run("dvc", "status", cwd=repo).lower()


def test_project_pipeline_is_valid_and_plots_name_written_columns():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    stages = run("dvc", "stage", "list", cwd=REPO)
    for stage in ("toy_world", "pretrain_clip", "pretrain_dino", "accuracy"):
        assert stage in stages
    assert [out["path"] for out in yaml.safe_load((REPO / "data.dvc").read_text())["outs"]] == ["data"]

    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (plot,) = pipeline["plots"]
    (columns,) = next(iter(plot.values()))["y"].values()
    header = (REPO / "benchmarks" / "results" / "curves.csv").read_text().splitlines()[0].split(",")
    assert set(columns) <= set(header), "dvc.yaml plots name columns that benchmarks/accuracy.py does not write"


def test_dvc_lock_matches_the_committed_files():
    """Editing a stage's script, config or weights without `dvc commit` would make `dvc repro` on a
    fresh clone rerun that stage (the accuracy grid takes 40 minutes): the lock must be current."""
    import hashlib

    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    stale = []
    for stage, content in lock["stages"].items():
        for entry in content.get("deps", []) + content.get("outs", []):
            path = REPO / entry["path"]
            if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != entry["md5"]:
                stale.append(f"{stage}: {entry['path']}")
    assert not stale, f"dvc.lock is stale for {stale}; run `dvc commit -f <stage>` (or `dvc repro`)"
