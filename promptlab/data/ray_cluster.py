"""Ray, an optional extra: its import with a one-sentence install hint, and the cluster to use
(``RAY_ADDRESS``'s, else a local one). Imports no torch.
"""

from __future__ import annotations

import math
from typing import Any

from promptlab.errors import UserError

RAY_INSTALL = "pip install 'promptlab-clip[ray]'"


class RayMissingError(UserError):
    """The ray engine was asked for without Ray Data installed."""


def import_ray(option: str = "--engine ray") -> Any:
    """The ``ray`` module, connected to ``RAY_ADDRESS``'s cluster or a local one.

    Args:
        option: the option that asked for Ray, named in the error.

    Raises:
        RayMissingError: Ray Data is not installed; the sentence says how to install it.
    """
    try:
        import ray
        import ray.data  # Ray Data is an extra of ray: its import is the check
    except ImportError as error:
        raise RayMissingError(f"{option} needs Ray Data: install it with {RAY_INSTALL}.") from error
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False, configure_logging=False)
    return ray


def actor_pool_plan(rows: int, batch_size: int, actors: int | None, gpus: int) -> tuple[int, int]:
    """How to split ``rows`` for a pool of actors: (blocks, actors).

    A block per batch (at most 200, or 4 per actor), so every actor gets work even for a few
    batches, and no more actors than blocks.

    Args:
        rows: items to map.
        batch_size: items per actor call.
        actors: the pool's size asked for (None: one per GPU, else 2).
        gpus: GPUs in the cluster.
    """
    wanted = actors or max(gpus, 2)
    blocks = max(1, min(math.ceil(rows / max(batch_size, 1)), max(200, 4 * wanted)))
    return blocks, min(wanted, blocks)
