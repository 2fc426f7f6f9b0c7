"""The data version of a dataset folder tracked by DVC: by ``<folder>.dvc`` (``dvc add``) or as a
pipeline stage's output recorded in ``dvc.lock`` (the toy world).
"""

from __future__ import annotations

from pathlib import Path

import yaml


def _read_yaml(path: Path) -> dict:
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _md5_of(outs: object, base: Path, target: Path) -> str | None:
    """md5 of the entry in a DVC ``outs`` list whose path (relative to ``base``) is ``target``."""
    for out in outs if isinstance(outs, list) else []:
        if isinstance(out, dict) and "md5" in out and (base / str(out.get("path", ""))).resolve() == target:
            return str(out["md5"])
    return None


def dvc_data_version(folder: str | Path) -> str | None:
    """``dvc:<md5>`` of the nearest DVC-tracked folder holding ``folder`` (itself or a parent), else None."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if not candidate.name:  # the filesystem root
            break
        md5 = _md5_of(_read_yaml(candidate.with_name(candidate.name + ".dvc")).get("outs"), candidate.parent, candidate)
        lock = _read_yaml(candidate.parent / "dvc.lock").get("stages")
        for stage in lock.values() if isinstance(lock, dict) and md5 is None else []:
            md5 = _md5_of(stage.get("outs") if isinstance(stage, dict) else None, candidate.parent, candidate)
            if md5:
                break
        if md5:
            return f"dvc:{md5}"
    return None
