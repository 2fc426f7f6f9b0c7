"""promptlab's name on the package index, and what each kind of install can run.

The import package and the command are ``promptlab``; the distribution is ``promptlab-clip``
(``promptlab`` on the index is an unrelated project). Until it is published, install the wheel
built from a source checkout (``pip wheel --no-deps -w dist .``). This module imports nothing
outside the standard library, so the ONNX-only install can use it.
"""

from __future__ import annotations

import importlib.util

DISTRIBUTION = "promptlab-clip"
WHEEL_GLOB = "promptlab_clip-*.whl"  # the wheel's file name spells the distribution with an underscore
FULL_INSTALL = f"pip install {WHEEL_GLOB} (the wheel of {DISTRIBUTION}, with its dependencies)"
# Top-level modules of the full install's dependencies; a missing one means the ONNX-only install.
FULL_INSTALL_MODULES = frozenset(
    {
        "torch", "torchvision", "lightning", "jsonargparse", "open_clip", "timm", "torchmetrics", "safetensors",
        "matplotlib", "yaml", "omegaconf", "dvc", "streamlit", "sklearn", "onnx", "onnxscript", "litserve",
        "psutil", "filelock", "typing_extensions", "tqdm", "huggingface_hub", "starlette", "uvicorn",
    }
)  # fmt: skip


def has_full_install() -> bool:
    """True when torch is importable: the training stack, the torch classifier and the server can run."""
    return importlib.util.find_spec("torch") is not None


def missing_dependency_message(error: ModuleNotFoundError, what: str) -> str | None:
    """One sentence for a dependency of the full install that is missing (None for any other module).

    Args:
        error: the import's error.
        what: what needed it, e.g. "promptlab fit".
    """
    module = (error.name or "").split(".")[0]
    if module not in FULL_INSTALL_MODULES:
        return None
    return (
        f"{what} needs the full install of {DISTRIBUTION} ({module} is missing here, as in the ONNX-only "
        f"install): {FULL_INSTALL}."
    )
