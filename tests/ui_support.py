"""Shared by the app's tests: toy-world images for a few classes and a project filled with them."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

from promptlab.toy.render import random_attributes, render
from promptlab.workspace.project import Project, Workspace
from promptlab.workspace.runs import run_status

SHAPES = ("circle", "square", "triangle")


def toy_png(shape: str, rng: random.Random, styles: tuple[str, ...] = ("filled",)) -> bytes:
    """One 32 px toy-world image of ``shape`` as PNG bytes."""
    buffer = io.BytesIO()
    render(random_attributes(rng, shapes=(shape,), styles=styles), rng).save(buffer, format="PNG")
    return buffer.getvalue()


def write_toy_images(
    folder: Path,
    per_class: int,
    seed: int = 0,
    styles: tuple[str, ...] = ("filled",),
    shapes: tuple[str, ...] = SHAPES,
) -> dict[str, list[Path]]:
    """``folder/<shape>_<i>.png`` for each shape, in random ``styles``; returns the paths per shape."""
    rng, paths = random.Random(seed), {}
    folder.mkdir(parents=True, exist_ok=True)
    for shape in shapes:
        paths[shape] = []
        for i in range(per_class):
            path = folder / f"{shape}_{i}.png"
            path.write_bytes(toy_png(shape, rng, styles))
            paths[shape].append(path)
    return paths


def toy_project(root: Path, per_class: int = 6, pool: int = 0, seed: int = 0) -> Project:
    """A project ``shapes`` with three toy classes of ``per_class`` images and ``pool`` unlabelled ones."""
    rng = random.Random(seed)
    project = Workspace(root).create("shapes")
    for shape in SHAPES:
        project.add_class(shape)
        project.add_images(shape, [(f"{shape}{i}.png", toy_png(shape, rng)) for i in range(per_class)])
    if pool:
        project.add_images(None, [(f"u{i}.png", toy_png(SHAPES[i % 3], rng)) for i in range(pool)])
    return project


def wait_for_run(project: Project, run_id: str, timeout_s: float = 240) -> dict:
    """Polls until the run leaves queued/running; returns its final ``run.json``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = run_status(project.runs_dir / run_id)
        if record.get("status") not in ("queued", "running"):
            return record
        time.sleep(0.5)
    raise TimeoutError(f"Run {run_id} still {record.get('status')} after {timeout_s} s: {record}")
