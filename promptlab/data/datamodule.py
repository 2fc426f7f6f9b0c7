"""The few-shot LightningDataModule: image folders, CoOp split files and the 11 standard datasets."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sized
from functools import cached_property
from pathlib import Path
from typing import Literal, cast

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from promptlab.backbone import FrozenCLIP, PreprocessConfig
from promptlab.data.catalog import STANDARD_DATASETS
from promptlab.data.dataset_error import DatasetError
from promptlab.data.datasets import ImageSamples, collate_skipping_none
from promptlab.data.feature_cache import (
    CachedFeatureKind,
    CachedFeatures,
    FeatureCache,
    default_cache_dir,
    encoder_key,
)
from promptlab.data.prediction_inputs import prediction_samples
from promptlab.data.sampling import Sample, draw_train_val, subsample_classes
from promptlab.data.screening import log_summary, screen_splits
from promptlab.data.sources import SplitSamples, check_class_names_of_splits, read_dataset
from promptlab.data.transforms import test_transform, train_transform
from promptlab.data.unlabelled import names_only_splits, strong_transform, unlabelled_pool
from promptlab.data.versioning import dvc_data_version
from promptlab.run_folder import DATA_INFO_FILE_NAME, SPLIT_FILE_NAME, run_dir

log = logging.getLogger(__name__)


class FewShotDataModule(L.LightningDataModule):
    """Few-shot image classification data.

    Args:
        root: the image folder (``dataset: folder``), the folder split paths are relative to
            (``dataset: split``), or the data root holding a standard dataset's folder.
        dataset: ``folder``, ``split`` or a standard dataset name (``oxford_pets``, ``imagenet``...).
        split_file: CoOp split JSON for ``dataset: split`` (e.g. a run's saved ``fewshot_split.json``).
        shots: training images per class (the Dassl draw); 0 or less uses all.
        seed: few-shot draw seed (the benchmark protocol uses 1, 2, 3).
        subsample_classes: ``base`` (first half of the sorted labels), ``new`` (the rest) or ``all``.
        train_fraction: for a flat folder, share of each class used for training.
        val_fraction: share of each class used for validation: of a flat folder, or of the training
            images of a dataset without a validation split (when there is no few-shot draw).
        batch_size: training batch size (reference: 32).
        test_batch_size: evaluation batch size.
        num_workers: data loading processes.
        crop_scale: RandomResizedCrop area range of the training transform (reference: 0.08-1; tiny
            images need a larger minimum, or the crops lose the object).
        skip_bad_images: skip unreadable images instead of stopping: every image the run reads is
            decoded once first, drawn ones that fail are replaced from their class, and ``data.json``
            lists the skipped files.
        predict_files: images or folders of images for ``promptlab predict``.
        label_free: train on the unlabelled pool (NoLA): training batches are strong views of
            unlabelled images, (image, -1, pool index); labelled splits serve only to report accuracy.
        unlabelled: the unlabelled pool, a folder searched recursively (default with ``label_free``:
            the dataset's training split, labels dropped).
        class_names_file: class names, one per line, when there is no labelled dataset at all.
        cache_features: when the method's image encoder is frozen (zero-shot, CoOp, MoCoOp), compute
            image features once, keep them on disk and train on them (see :mod:`promptlab.data.feature_cache`).
        cache_views: augmented views cached per training image; each epoch draws one per image.
        cache_dir: the feature cache folder (default ``$PROMPTLAB_CACHE_DIR`` or ``~/.cache/promptlab/features``).
        engine: where bulk encoding runs (the feature cache's views, NoLA's unlabelled pool): ``local``
            (this process) or ``ray`` (a Ray Data actor pool on the cluster at ``RAY_ADDRESS``, or a
            local one; the same features; pip install 'promptlab-clip[ray]').
        ray_actors: actors in the ray engine's pool (default: one per GPU, else 2).
    """

    def __init__(
        self,
        root: str = "data",
        dataset: str = "folder",
        split_file: str | None = None,
        shots: int = 16,
        seed: int = 1,
        subsample_classes: Literal["all", "base", "new"] = "all",
        train_fraction: float = 0.5,
        val_fraction: float = 0.2,
        batch_size: int = 32,
        test_batch_size: int = 100,
        num_workers: int = 2,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        skip_bad_images: bool = False,
        predict_files: list[str] | None = None,
        label_free: bool = False,
        unlabelled: str | None = None,
        class_names_file: str | None = None,
        cache_features: bool = True,
        cache_views: int = 16,
        cache_dir: str | None = None,
        engine: Literal["local", "ray"] = "local",
        ray_actors: int | None = None,
    ) -> None:
        super().__init__()
        known = ("folder", "split", *STANDARD_DATASETS)
        if dataset not in known:
            raise DatasetError(f"Unknown dataset {dataset!r}; use one of {', '.join(known)}.")
        if dataset == "split" and not split_file:
            raise DatasetError("dataset: split needs --data.split_file pointing at a CoOp split JSON.")
        self.save_hyperparameters()
        self.root = root
        self.dataset = dataset
        self.split_file = split_file
        self.shots = shots
        self.seed = seed
        self.subsample = subsample_classes
        self.train_fraction = train_fraction
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size
        self.num_workers = num_workers
        self.crop_scale = crop_scale
        self.skip_bad_images = skip_bad_images
        self.predict_files = predict_files or []
        self.label_free = label_free
        self.unlabelled = unlabelled
        self.class_names_file = class_names_file
        if cache_views < 1:
            raise DatasetError(f"cache_views must be at least 1 (got {cache_views}).")
        self.cache_features = cache_features
        self.cache_views = cache_views
        self.cache_dir = cache_dir
        if engine not in ("local", "ray") or (ray_actors is not None and ray_actors < 1):
            raise DatasetError(
                f"--data.engine is local or ray and --data.ray_actors at least 1 (got {engine!r}, {ray_actors})."
            )
        self.engine = engine
        self.ray_actors = ray_actors
        self.preprocess: PreprocessConfig | None = None  # the backbone's, set by connect_model
        self._encoder: FrozenCLIP | None = None  # a frozen image encoder whose features may be cached
        self._cache: FeatureCache | None = None
        self._cached_kind: CachedFeatureKind = "projected"
        self.unreadable_images: dict[Sample, str] = {}  # found by screening (skip_bad_images), with the reason

    # -- what the model needs at construction (linked by the CLI) --------------------------------

    @property
    def class_names(self) -> list[str]:
        """Class names by label, after base/new subsampling."""
        return self.splits.class_names

    @property
    def prompt_template(self) -> str:
        """The dataset's hand-written prompt (CoOp's per-dataset template), ``a photo of a {}.`` otherwise."""
        info = STANDARD_DATASETS.get(self.dataset)
        return info.template if info else "a photo of a {}."

    @cached_property
    def splits(self) -> SplitSamples:
        """The dataset read from disk, few-shot drawn and class-subsampled (deterministic for the seed)."""
        if self.class_names_file:
            return names_only_splits(self.class_names_file, self.unlabelled)
        data, screened = read_dataset(
            self.dataset, self.root, self.split_file, self.train_fraction, self.val_fraction, self.skip_bad_images
        )
        shots = 0 if self.label_free else self.shots
        train, val = draw_train_val(data.train, data.val, shots, self.seed, self.val_fraction)
        if not data.val and val:
            log.info(
                "Dataset %r has no validation split: %d of its training images validate instead (never the "
                "test images).",
                self.root,
                len(val),
            )
        elif not val:
            log.warning(
                "Dataset %r has no validation images (and too few training images to spare some): "
                "val/acc and calibration are skipped.",
                self.root,
            )
        test = data.test
        if screened is not None:
            self.unreadable_images = screened
            log_summary(screened)
        elif self.skip_bad_images:
            train, val, test, self.unreadable_images = screen_splits(
                data.image_root, data.train, train, val, test, shots, self.seed
            )
        train, val, test = subsample_classes([train, val, test], self.subsample)
        class_names = check_class_names_of_splits(self.root, train, val, test, len(self.unreadable_images or {}))
        log.info(
            "Data: %d classes, %d train / %d val / %d test images (%s shots, seed %d, %s classes).",
            len(class_names),
            len(train),
            len(val),
            len(test),
            self.shots,
            self.seed,
            self.subsample,
        )
        return SplitSamples(data.image_root, class_names, train, val, test)

    @property
    def data_version(self) -> str | None:
        """DVC version of the dataset folder when it is tracked, else None."""
        return dvc_data_version(self.splits.image_root)

    # -- Lightning hooks --------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Reads the data and saves the drawn split and a data description next to the run."""
        splits = self.splits
        out_dir = run_dir(self.trainer)
        if out_dir is not None and stage == "fit":
            self.save_split(out_dir / SPLIT_FILE_NAME)
            info = {
                "dataset": self.dataset,
                "root": str(Path(self.root).resolve()),
                "image_root": str(splits.image_root.resolve()),
                "shots": self.shots,
                "seed": self.seed,
                "subsample_classes": self.subsample,
                "class_names": splits.class_names,
                "data_version": self.data_version,
                # what the run really trained on: the draw may fall short of `shots` for small classes
                "train_images_per_class": {
                    name: sum(s.label == label for s in splits.train) for label, name in enumerate(splits.class_names)
                },
                "skipped_images": [
                    {"path": sample.path, "reason": reason} for sample, reason in self.unreadable_images.items()
                ],
            }
            (out_dir / DATA_INFO_FILE_NAME).write_text(json.dumps(info, indent=2))

    def save_split(self, path: Path) -> None:
        """Writes the drawn split in CoOp format, reusable with ``dataset: split``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        splits = self.splits
        content = {name: [list(s) for s in getattr(splits, name)] for name in ("train", "val", "test")}
        path.write_text(json.dumps(content))

    def connect_model(
        self,
        preprocess: PreprocessConfig,
        frozen_encoder: FrozenCLIP | None = None,
        cached_features: CachedFeatureKind = "projected",
    ) -> None:
        """What the data takes from the model (see ``CLIPClassifier.connect_data``): its preprocessing,
        and its backbone when the image encoder is frozen (features are then cached: ``projected``, the
        image features, or ``pre_projection``, the pooled features before the last projection, cached
        apart).
        """
        self.preprocess = preprocess
        self._encoder = frozen_encoder
        self._cached_kind = cached_features
        self._cache = None

    def _preprocess(self) -> PreprocessConfig:
        if self.preprocess is None:
            raise RuntimeError("The data module has no preprocessing: call model.connect_data(datamodule) first.")
        return self.preprocess

    def _loader(
        self,
        samples: list[Sample],
        train: bool,
        transform: Callable | None = None,
        root: Path | None = None,
        skip_bad_images: bool | None = None,
        shard: bool = True,
    ) -> DataLoader:
        """(image, label, index) batches; by default the train or test transform of the split's images."""
        cfg = self._preprocess()
        dataset = ImageSamples(
            root or self.splits.image_root,
            samples,
            transform or (train_transform(cfg, self.crop_scale) if train else test_transform(cfg)),
            self.skip_bad_images if skip_bad_images is None else skip_bad_images,
        )
        return self._data_loader(dataset, train, self.num_workers, collate_skipping_none, shard)

    def _data_loader(
        self, dataset: Dataset, train: bool, num_workers: int, collate_fn: Callable | None, shard: bool = True
    ) -> DataLoader:
        """Training batches shuffled (Lightning shards them under DDP); evaluation batches in order,
        each image on exactly one process (Lightning's default sampler would pad with repeats), or on
        every process when not ``shard``.
        """
        sampler = None
        if shard and not train and self.trainer is not None and self.trainer.world_size > 1:
            world, rank = self.trainer.world_size, self.trainer.global_rank
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.test_batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train and len(cast(Sized, dataset)) > self.batch_size,  # as Dassl, but never drop everything
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            collate_fn=collate_fn,
        )

    def _feature_cache(self) -> FeatureCache | None:
        """The feature cache of the connected frozen encoder when caching is on, else None."""
        if not self.cache_features or self._encoder is None:
            return None
        if self._cache is None:
            backbone, root = self._encoder, Path(self.cache_dir) if self.cache_dir else default_cache_dir()
            if self._cached_kind == "pre_projection":  # the projection does not change these: not in the key
                state = {k: v for k, v in backbone.image_encoder_state().items() if k != "proj"}
                key = encoder_key(backbone.model_name, state, backbone.model_cfg) + "-pre_projection"
                self._cache = FeatureCache(root, backbone.encode_image_pre_projection, key)
            else:
                key = encoder_key(backbone.model_name, backbone.image_encoder_state(), backbone.model_cfg)
                self._cache = FeatureCache(root, backbone.encode_image, key)
        return self._cache

    def _cached_features(
        self, samples: list[Sample], train: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(N', V, D) features from the feature cache (filled first where needed), their (N',) labels
        and (N',) indices into ``samples`` (N' < N when unreadable images were skipped); None when
        caching does not apply.
        """
        cache = self._feature_cache()
        if cache is None:
            return None
        cfg, trainer = self._preprocess(), self.trainer
        assert self._encoder is not None  # a feature cache exists only for a frozen encoder
        features, kept = cache.features(
            [self.splits.image_root / s.path for s in samples],
            train_transform(cfg, self.crop_scale) if train else test_transform(cfg),
            self.cache_views if train else 1,
            next(self._encoder.parameters()).device,
            batch_size=self.test_batch_size,
            num_workers=self.num_workers,
            skip_bad_images=self.skip_bad_images,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            barrier=trainer.strategy.barrier if trainer else lambda: None,
            engine=self.engine,
            ray_actors=self.ray_actors,
        )
        return features, torch.tensor([samples[i].label for i in kept.tolist()], dtype=torch.long), kept

    def _cached_loader(self, samples: list[Sample], train: bool, shard: bool = True) -> DataLoader | None:
        """(feature, label, index) batches from the feature cache; None when caching does not apply."""
        cached = self._cached_features(samples, train)
        if cached is None:
            return None
        return self._data_loader(CachedFeatures(*cached), train, 0, None, shard)  # in memory: no workers

    def split_features(self, split: Literal["train", "val"], augmented: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Image features of a labelled split, for methods fitted on features (linear probe, Tip-Adapter).

        Args:
            split: ``train`` or ``val`` (empty when the dataset has no validation images).
            augmented: ``cache_views`` training-transform views per image, else the one test view.

        Returns:
            (N, V, D) normalised features and (N,) labels (unreadable images skipped when allowed).

        Raises:
            DatasetError: the feature cache is off or the encoder is not frozen.
        """
        samples = getattr(self.splits, split)
        if not samples:
            return torch.empty(0, 1, 0), torch.empty(0, dtype=torch.long)
        cached = self._cached_features(samples, augmented)
        if cached is None:
            raise DatasetError("This method learns from cached image features: leave --data.cache_features true.")
        features, labels, _ = cached
        return features, labels

    @override
    def train_dataloader(self) -> DataLoader:
        if not self.label_free:
            return self._cached_loader(self.splits.train, True) or self._loader(self.splits.train, train=True)
        root, samples = self.unlabelled_pool
        return self._loader(samples, True, strong_transform(self._preprocess()), root, skip_bad_images=True)

    @override
    def val_dataloader(self) -> DataLoader | list:
        samples = self.splits.val  # never the test images, whose accuracy must stay unseen until the end
        return (self._cached_loader(samples, False) or self._loader(samples, train=False)) if samples else []

    def calibration_dataloader(self) -> DataLoader | None:
        """The validation split alone (never the test images), test view, every image on every process,
        for fitting the temperature of calibrated probabilities; None when there is no validation split.
        """
        samples = self.splits.val
        if not samples:
            return None
        return self._cached_loader(samples, False, shard=False) or self._loader(samples, train=False, shard=False)

    def reference_dataloader(self, max_images: int | None = None) -> DataLoader | None:
        """The training images (the unlabelled pool when learning without labels), test view, every
        image on every process, for the familiarity reference of "none of these"; at most ``max_images``
        of them (a seeded draw, in order); None without any.
        """
        root, samples = self.unlabelled_pool if self.label_free else (None, self.splits.train)
        if max_images is not None and len(samples) > max_images:
            chosen = sorted(random.Random(0).sample(range(len(samples)), max_images))
            samples = [samples[i] for i in chosen]
        if not samples:
            return None
        if self.label_free:
            return self._loader(samples, False, root=root, skip_bad_images=True, shard=False)
        return self._cached_loader(samples, False, shard=False) or self._loader(samples, train=False, shard=False)

    @override
    def test_dataloader(self) -> DataLoader | list:
        samples = self.splits.test
        return (self._cached_loader(samples, False) or self._loader(samples, train=False)) if samples else []

    # -- the unlabelled pool (label_free) ---------------------------------------------------------

    @cached_property
    def unlabelled_pool(self) -> tuple[Path, list[Sample]]:
        """(image root, samples with label -1) of the unlabelled pool."""
        return unlabelled_pool(self.unlabelled, self.splits)

    def pool_dataloader(self, transform: Callable) -> DataLoader:
        """The whole unlabelled pool in order, also under DDP, (image, -1, pool index) batches; unreadable
        images are skipped.
        """
        root, samples = self.unlabelled_pool
        return self._loader(samples, False, transform, root, skip_bad_images=True, shard=False)

    def labelled_dataloader(self, transform: Callable) -> DataLoader | None:
        """The whole test split (else val), also under DDP, with another transform, to report label-free
        stages; None if absent.
        """
        samples = self.splits.test or self.splits.val
        return self._loader(samples, False, transform, shard=False) if samples else None

    @cached_property
    def prediction_samples(self) -> list[Sample]:
        """The images of ``predict_files``; predict batches carry indices into this list."""
        return prediction_samples(self.predict_files)

    @override
    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.prediction_samples, train=False)
