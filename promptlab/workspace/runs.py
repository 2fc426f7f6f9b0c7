"""Training runs of a project: settings, the held-out split, starting a background worker, status,
cancelling, and the one-run-at-a-time lock.

A run folder ``<project>/runs/<run id>/`` holds ``settings.json`` (what the user chose),
``run.json`` (status, process id, times, data version, accuracy or error), ``split.json`` (the
benchmark's split-file format: which images trained and which measured), ``data.dvc`` (the DVC
snapshot), ``config.yaml`` (the resolved promptlab config the worker ran), ``progress.json``,
``log.txt``, ``lightning/`` (the Lightning log folder: metrics.csv, checkpoints, test reports) and,
when it finished, ``classifier.safetensors`` plus ``predictions.json`` and ``inspection.json``
(the method's Inspect panels) and ``baseline/`` (zero-shot CLIP on the same held-out images).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from promptlab.workspace.project import Project, ProjectError
from promptlab.workspace.run_record import (
    LOCK_FILE,
    LOG_FILE,
    RUN_FILE,
    SETTINGS_FILE,
    SPLIT_FILE,
    RunSettings,
    now_utc,
    read_json,
    update_run,
    write_json,
)
from promptlab.workspace.snapshots import take_snapshot
from promptlab.workspace.worker import main as work

# Backbones offered in the app: (open_clip model, weights tag). toy-clip ships with promptlab.
BACKBONES = {
    "toy-clip (offline, 32 px toy world)": ("toy-clip", "promptlab"),
    "ViT-B-16 (OpenAI)": ("ViT-B-16", "openai"),
    "ViT-B-32 (OpenAI)": ("ViT-B-32", "openai"),
    "RN50 (OpenAI)": ("RN50", "openai"),
}
ACTIVE = ("queued", "running")


def process_alive(pid: int | None) -> bool:
    """True while process ``pid`` runs (a finished child not yet reaped counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie has exited even though kill(0) succeeds
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# -- the held-out split -----------------------------------------------------------------------------


def check_trainable(project: Project, settings: RunSettings) -> None:
    """Raises :class:`ProjectError` naming the class or folder to fix when a run cannot start."""
    method = settings.method_class
    counts = project.image_counts()
    if len(counts) < 2:
        raise ProjectError(f"Project {project.name!r} has {len(counts)} class(es); add at least 2 classes.")
    if method.learns_from == "unlabelled" and len(project.images(None)) < len(counts):
        raise ProjectError(
            f"{method.label} learns from unlabelled images: add at least {len(counts)} to the unlabelled pool "
            "(more is better, e.g. 20 per class)."
        )
    if method.min_images_per_class < 1:
        return
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise ProjectError(f"Class {empty[0]!r} has no images; upload some or delete the class.")
    short = [name for name, n in counts.items() if n < method.min_images_per_class]
    if short:
        raise ProjectError(
            f"Class {short[0]!r} has only {counts[short[0]]} image(s); {method.label} needs at least "
            f"{method.min_images_per_class} per class (one to learn from, one to measure accuracy)."
        )


def held_out_count(images: int, test_fraction: float) -> int:
    """Images of a class held out to measure: ``test_fraction`` of them, at least one, leaving one to train."""
    return min(max(1, round(test_fraction * images)), images - 1)


def held_out_split(project: Project, settings: RunSettings) -> dict[str, list[list]]:
    """The split file (the benchmark's format) of the project's labelled images (paths relative to ``data/``).

    Methods that learn nothing from labels measure accuracy on every labelled image (label-free
    ones measure nothing unless every class has labelled images). The others hold out
    ``test_fraction`` of each class (at least one image, seeded) and train on the rest. The split has
    no validation images: the data module holds out a share of each class's training images for
    validation (the live curve, calibration, methods that choose on validation), never the held-out
    images.
    """
    method = settings.method_class
    rng = random.Random(settings.seed)
    split: dict[str, list[list]] = {"train": [], "val": [], "test": []}
    if method.min_images_per_class < 1 and not all(project.image_counts().values()):
        return split
    for label, name in enumerate(project.classes()):
        items = [[str(p.relative_to(project.data_dir)), label, name] for p in project.images(name)]
        if method.learns_from != "labels":
            split["train"] += items  # unused by the method; the data module wants every class present
            split["test"] += items
            continue
        rng.shuffle(items)
        n_test = held_out_count(len(items), settings.test_fraction)
        split["test"] += items[:n_test]
        split["train"] += items[n_test:]
    return split


# -- starting, listing, cancelling ------------------------------------------------------------------


def active_run(project: Project) -> str | None:
    """The id of the run training now (it holds the project's lock), or None.

    A lock left by a worker that died or finished is removed on the way.
    """
    lock = project.path / LOCK_FILE
    run_id = lock.read_text().strip() if lock.is_file() else ""
    if not run_id:
        return None
    if run_status(project.runs_dir / run_id).get("status") in ACTIVE:
        return run_id
    lock.unlink(missing_ok=True)
    return None


def start_run(project: Project, settings: RunSettings, in_process: bool = False) -> str:
    """Checks the data, snapshots it with DVC, writes the split and starts the worker process.

    The worker runs in its own session, so it outlives a browser refresh or an app restart.

    Args:
        project: the project to train on.
        settings: what the user chose on the Train page.
        in_process: run the worker here and return when it is done (for methods registered at run
            time, which a new process would not know: tests, notebooks).

    Raises:
        ProjectError: another run is training, or the data cannot train this method.
    """
    check_trainable(project, settings)
    project.runs_dir.mkdir(exist_ok=True)
    run_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{settings.method}"
    while (project.runs_dir / run_id).exists():
        run_id += "x"
    lock = project.path / LOCK_FILE
    running = active_run(project)
    if running is not None:
        raise ProjectError(f"Run {running!r} is still training; wait for it or cancel it first.")
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError as error:
        raise ProjectError("Another run is starting right now; wait for it or cancel it first.") from error
    with os.fdopen(handle, "w") as f:
        f.write(run_id)
    run_dir = project.runs_dir / run_id
    try:
        run_dir.mkdir()
        write_json(run_dir / SETTINGS_FILE, asdict(settings))
        write_json(run_dir / SPLIT_FILE, held_out_split(project, settings))
        update_run(
            run_dir,
            id=run_id,
            method=settings.method,
            backbone=settings.backbone,
            status="queued",
            created=now_utc(),
            data_version=take_snapshot(project.path, run_dir),
        )
        if in_process:
            work([str(run_dir)])  # records the outcome in run.json and releases the lock
            return run_id
        with (run_dir / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "promptlab.workspace.worker", str(run_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        update_run(run_dir, pid=process.pid)
        threading.Thread(target=process.wait, daemon=True).start()  # reap it, so it never lingers as a zombie
    except BaseException as error:
        lock.unlink(missing_ok=True)
        update_run(run_dir, status="failed", error=f"Could not start: {error}", finished=now_utc())
        raise
    return run_id


def run_status(run_dir: Path) -> dict:
    """``run.json`` with ``status`` corrected to ``interrupted`` when its worker died without saying so.

    A queued run without a process id is being started by :func:`start_run` right now.
    """
    record = read_json(run_dir / RUN_FILE)
    if record.get("status") in ACTIVE and record.get("pid") and not process_alive(record["pid"]):
        record = update_run(
            run_dir,
            status="interrupted",
            finished=now_utc(),
            error="The training process stopped unexpectedly (machine restarted or process killed); start a new run.",
        )
    return record


def list_runs(project: Project) -> list[dict]:
    """Every run's ``run.json`` (with ``status`` checked), newest first."""
    if not project.runs_dir.is_dir():
        return []
    folders = sorted((p for p in project.runs_dir.iterdir() if (p / RUN_FILE).is_file()), reverse=True)
    return [run_status(folder) for folder in folders]


def cancel_run(project: Project, run_id: str, wait_s: float = 10.0) -> None:
    """Stops a training run, records ``cancelled`` and releases the lock.

    The worker records it itself on SIGTERM; a worker killed before it installed its handler (just
    started) is recorded here.
    """
    run_dir = project.runs_dir / run_id
    pid = read_json(run_dir / RUN_FILE).get("pid")
    if pid and process_alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if read_json(run_dir / RUN_FILE).get("status") in ACTIVE:
        update_run(run_dir, status="cancelled", finished=now_utc())
        active_run(project)  # removes the lock the killed worker left
