"""DVC snapshots of a project's ``data/`` folder: each training run records the exact images it used.

A project folder is a DVC repository without git (``dvc init --no-scm``). Starting a run calls
``dvc add data``, which stores every file in the project's DVC cache and writes ``data.dvc``; the run
keeps a copy of that file. Its md5 is the run's data version, and :func:`snapshot_files` /
:func:`restore_snapshot` read or rebuild that exact image set later, even after images were
deleted or classes renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SNAPSHOT_FILE = "data.dvc"


class SnapshotError(RuntimeError):
    """DVC could not record or read a snapshot; the message carries DVC's own explanation."""


def _dvc(project_path: Path, *args: str) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args, "-q"], cwd=project_path, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise SnapshotError(f"dvc {' '.join(args)} failed in {str(project_path)!r}: {message[-1] if message else ''}")


def init_snapshots(project_path: Path) -> None:
    """Makes the project folder a git-less DVC repository."""
    _dvc(project_path, "init", "--no-scm")


def take_snapshot(project_path: Path, run_dir: Path) -> str:
    """Records ``data/`` in the DVC cache, copies ``data.dvc`` into ``run_dir`` and returns ``dvc:<md5>``."""
    _dvc(project_path, "add", "data")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project_path / SNAPSHOT_FILE, run_dir / SNAPSHOT_FILE)
    return snapshot_version(run_dir)


def _snapshot_out(run_dir: Path) -> dict:
    try:
        return yaml.safe_load((run_dir / SNAPSHOT_FILE).read_text())["outs"][0]
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError) as error:
        raise SnapshotError(f"Run {str(run_dir)!r} has no readable {SNAPSHOT_FILE} ({error}).") from error


def snapshot_version(run_dir: Path) -> str:
    """``dvc:<md5>`` of the data a run used (the same string the data module records)."""
    return f"dvc:{_snapshot_out(run_dir)['md5']}"


def _cache_file(project_path: Path, md5: str) -> Path:
    return project_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def snapshot_files(project_path: Path, run_dir: Path) -> dict[str, str]:
    """The files of a run's snapshot: path relative to ``data/`` -> md5, read from the DVC cache."""
    manifest = _cache_file(project_path, _snapshot_out(run_dir)["md5"])
    try:
        entries = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SnapshotError(
            f"The DVC cache of {str(project_path)!r} lacks snapshot {manifest.name} ({error})."
        ) from error
    return {entry["relpath"]: entry["md5"] for entry in entries}


def restore_snapshot(project_path: Path, run_dir: Path, target: Path) -> Path:
    """Copies the images a run trained on from the DVC cache into ``target`` (a new folder)."""
    if target.exists():
        raise SnapshotError(f"{str(target)!r} exists; restore into a new folder.")
    for relative, md5 in snapshot_files(project_path, run_dir).items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_cache_file(project_path, md5), destination)
    return target
