"""promptlab's shipped configs (``promptlab/configs/<group>/<name>.yaml``), found with
importlib.resources so that they work from an installed wheel as from a source checkout (where
``configs/`` at the top of the repository links here).
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import yaml

PACKAGE_PREFIX = "configs/"


def shipped_config(name: str) -> Path | None:
    """The file of a shipped config (``toy/coop.yaml`` or ``configs/toy/coop.yaml``), or None."""
    relative = name.removeprefix(PACKAGE_PREFIX)
    resource = files(__package__).joinpath(*relative.split("/"))
    if not resource.is_file():
        return None
    with as_file(resource) as path:  # a real file for an installed wheel; zip imports are not supported
        return Path(path)


def toy_config_path(method) -> Path:
    """The toy-world config of a method (its contract's ``toy``), e.g. ``promptlab/configs/toy/coop.yaml``.

    Raises:
        FileNotFoundError: the method declares none, or the file is missing from the installation.
    """
    path = shipped_config(f"toy/{method.toy.config}") if method.toy else None
    if path is None:
        raise FileNotFoundError(f"Method {method.key!r} ships no toy config; it cannot run on toy-clip in the app.")
    return path


def load_toy_config(method) -> dict:
    """The parsed toy-world config of a method (see :func:`toy_config_path`)."""
    return yaml.safe_load(toy_config_path(method).read_text())
