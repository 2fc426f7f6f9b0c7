"""Few-shot data: readers, the Dassl draw, transforms and the LightningDataModule."""

from promptlab.data.datamodule import FewShotDataModule
from promptlab.data.images import ImageLoadError
from promptlab.data.sources import DatasetError

__all__ = ["DatasetError", "FewShotDataModule", "ImageLoadError"]
