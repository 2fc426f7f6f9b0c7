"""The data version of a dataset folder when it is tracked by DVC (``<folder>.dvc``)."""

from __future__ import annotations

from pathlib import Path

import yaml


def dvc_data_version(folder: str | Path) -> str | None:
    """``dvc:<md5>`` of the nearest ``.dvc`` file tracking ``folder`` or a parent of it, else None."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if not candidate.name:  # the filesystem root
            break
        dvc_file = candidate.with_name(candidate.name + ".dvc")
        if dvc_file.is_file():
            try:
                outs = yaml.safe_load(dvc_file.read_text()).get("outs", [])
                return f"dvc:{outs[0]['md5']}" if outs else None
            except (yaml.YAMLError, AttributeError, KeyError, IndexError, TypeError):
                return None
    return None
