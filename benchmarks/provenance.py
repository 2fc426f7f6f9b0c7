"""Which code a benchmark measured: the commit its JSON records, and the line the docs print under its table."""

from __future__ import annotations

import subprocess
from pathlib import Path


def current_commit() -> str | None:
    """The checkout's short commit hash, with ``+`` when files differ from it; None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "promptlab", "benchmarks"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+" if dirty else "")


def measured_at(commit: str | None) -> str:
    """The sentence under a table: the commit it was measured at (empty when unknown)."""
    return f"\nMeasured at commit `{commit}`.\n" if commit else ""
