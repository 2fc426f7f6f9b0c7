"""Few-shot data: readers, the Dassl draw, transforms and the LightningDataModule.

The data module is imported on first use, so that the torch-free modules of this package
(``promptlab.data.images``) serve the ONNX runtime without importing torch and Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptlab.data.datamodule import FewShotDataModule
    from promptlab.data.dataset_error import DatasetError
    from promptlab.data.images import ImageLoadError

__all__ = ["DatasetError", "FewShotDataModule", "ImageLoadError"]
_HOMES = {
    "FewShotDataModule": "promptlab.data.datamodule",
    "ImageLoadError": "promptlab.data.images",
    "DatasetError": "promptlab.data.dataset_error",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'promptlab.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
