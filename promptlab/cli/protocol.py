"""A benchmark protocol file: which methods, datasets, shots, seeds and backbones ``promptlab benchmark`` runs.

```yaml
name: coop_few_shot               # the runs go to <runs>/<name>/, the tables to <out>/
kind: few_shot                    # few_shot, cross_dataset or domain_generalisation
methods:                          # label: the method's config (its backbone with it)
  Zero-shot CLIP: configs/zeroshot/rn50.yaml
  CoOp: configs/coop/rn50.yaml
datasets: [caltech101, dtd]       # few_shot: trained and tested on each
train_on: imagenet                # cross_dataset, domain_generalisation: trained here, tested on `datasets`
shots: [1, 2, 4, 8, 16]
seeds: [1, 2, 3]
data_root: data
base_to_new: []                   # datasets also run base-to-new (train on the base half of the classes)
base_to_new_shots: 16
```

A method given as ``toy`` uses its own toy-world config (its contract's ``toy``); datasets named
``toy_<task>`` are the offline toy world's tasks, where label-free methods get its unlabelled pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml

from promptlab.errors import UserError

Kind = Literal["few_shot", "cross_dataset", "domain_generalisation"]
KINDS = ("few_shot", "cross_dataset", "domain_generalisation")


class ProtocolError(UserError):
    """A protocol file that cannot be run as written."""


@dataclass
class Protocol:
    """A protocol file's content (see the module docstring)."""

    name: str
    methods: dict[str, str]
    datasets: list[str]
    kind: Kind = "few_shot"
    train_on: str | None = None
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    data_root: str = "data"
    base_to_new: list[str] = field(default_factory=list)
    base_to_new_shots: int = 16
    epochs: int | None = None


def load_protocol(path: str | Path) -> Protocol:
    """Reads and checks a protocol file.

    Raises:
        ProtocolError: the file is missing, not YAML, has unknown keys, or lacks what its kind needs.
    """
    from promptlab.configs import shipped_config

    path = Path(path)
    if not path.is_file():
        path = shipped_config(str(path)) or path
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ProtocolError(f"Protocol file {str(path)!r} cannot be read ({error}); check the path.") from error
    known = {f.name for f in fields(Protocol)}
    if not isinstance(content, dict) or set(content) - known:
        unknown = sorted(set(content) - known) if isinstance(content, dict) else "its content"
        raise ProtocolError(f"Protocol file {str(path)!r} has unknown keys {unknown}; it takes {sorted(known)}.")
    try:
        protocol = Protocol(**content)
    except TypeError as error:
        raise ProtocolError(
            f"Protocol file {str(path)!r} lacks a key ({error}); it needs name, methods, datasets."
        ) from error
    if protocol.kind not in KINDS:
        raise ProtocolError(f"Protocol file {str(path)!r} has kind {protocol.kind!r}; use one of {list(KINDS)}.")
    if protocol.kind != "few_shot" and not protocol.train_on:
        raise ProtocolError(f"Protocol file {str(path)!r} is {protocol.kind} and needs train_on (e.g. imagenet).")
    return protocol
