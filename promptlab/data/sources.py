"""Readers that turn a dataset on disk into labelled samples (image folders, CoOp splits, ImageNet...)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from promptlab.data.catalog import STANDARD_DATASETS, TOY_TASKS, DatasetInfo
from promptlab.data.dataset_error import DatasetError
from promptlab.data.images import list_images
from promptlab.data.sampling import Sample, split_folder_samples
from promptlab.data.screening import find_unreadable

SPLITS = ("train", "val", "test")
TOY_DATASETS = {f"toy_{task}" for task in TOY_TASKS}


@dataclass
class SplitSamples:
    """A dataset read from disk: image folder, class names by label, and the three splits."""

    image_root: Path
    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def normalise_class_name(name: str) -> str:
    """The form prompts use (CoOp replaces ``_`` by spaces); duplicates are judged on it too."""
    return " ".join(name.replace("_", " ").split())


def check_class_names(class_names: list[str], where: str) -> None:
    """Raises when two classes would read the same in a prompt (case and ``_`` ignored)."""
    seen: dict[str, str] = {}
    for name in class_names:
        key = normalise_class_name(name).lower()
        if not key:
            raise DatasetError(f"{where} has an empty class name; give every class a name.")
        if key in seen:
            raise DatasetError(
                f"{where} has duplicate class names {seen[key]!r} and {name!r} (they read the same in a prompt); "
                "rename or merge one of them."
            )
        seen[key] = name


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_class_folders(folder: Path, class_names: list[str] | None = None) -> tuple[list[str], list[Sample]]:
    """``folder/<class>/*.jpg`` -> (class names sorted as folders, samples with paths relative to folder)."""
    if class_names is None:
        class_names = [p.name for p in _class_folders(folder)]
        if not class_names:
            raise DatasetError(
                f"Image folder {str(folder)!r} has no class sub-folders; expected <root>/<class>/<image>."
            )
    samples = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        images = list_images(class_dir) if class_dir.is_dir() else []
        if not images:
            raise DatasetError(f"Class folder {str(class_dir)!r} has no images; add images to it or remove the folder.")
        samples += [Sample(str(p.relative_to(folder)), label, name) for p in images]
    return class_names, samples


def read_image_folder(
    root: str | Path,
    train_fraction: float = 0.5,
    val_fraction: float = 0.2,
    drop_unreadable: Callable[[Path, list[Sample]], list[Sample]] | None = None,
) -> SplitSamples:
    """Reads ``root/<class>/*`` (split per class, seeded) or ``root/{train,val,test}/<class>/*``.

    Args:
        root: the image folder.
        train_fraction: share of a flat folder's images per class for training.
        val_fraction: share for validation (the rest is the test split).
        drop_unreadable: for a flat folder, ``(root, samples) -> readable samples``, applied before
            the split (the split of a train/val/test layout is the user's: the caller screens it).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Image folder {str(root)!r} does not exist; check --data.root.")
    if (root / "train").is_dir():
        class_names, train = _read_class_folders(root / "train")
        splits = {"train": [s._replace(path=f"train/{s.path}") for s in train]}
        for split in ("val", "test"):
            if (root / split).is_dir():
                _, samples = _read_class_folders(root / split, class_names)
                splits[split] = [s._replace(path=f"{split}/{s.path}") for s in samples]
        if "test" not in splits:
            raise DatasetError(f"Image folder {str(root)!r} has train/ but no test/ folder; add test/<class>/ images.")
        check_class_names(class_names, f"Image folder {str(root)!r}")
        return SplitSamples(root, class_names, splits["train"], splits.get("val", []), splits["test"])
    class_names, samples = _read_class_folders(root)
    check_class_names(class_names, f"Image folder {str(root)!r}")
    if drop_unreadable is not None:
        samples = drop_unreadable(root, samples)
    train, val, test = split_folder_samples(samples, train_fraction, val_fraction)
    return SplitSamples(root, class_names, train, val, test)


def read_split_file(
    split_file: str | Path, image_root: str | Path, renames: dict[str, str] | None = None
) -> SplitSamples:
    """Reads a CoOp split JSON: ``{"train"|"val"|"test": [[relative_path, label, class_name], ...]}``."""
    split_file, image_root = Path(split_file), Path(image_root)
    if not split_file.is_file():
        raise DatasetError(f"Split file {str(split_file)!r} does not exist; check the path or the dataset layout.")
    try:
        content = json.loads(split_file.read_text())
        splits = {
            name: [Sample(str(path), int(label), str(cname)) for path, label, cname in content.get(name, [])]
            for name in SPLITS
        }
    except (ValueError, TypeError) as error:
        raise DatasetError(
            f"Split file {str(split_file)!r} is not in CoOp format "
            '{"train": [[relative_path, label, class_name], ...], ...}: '
            f"{error}."
        ) from error
    renames = renames or {}
    names: dict[int, str] = {}
    for sample in (s for split in SPLITS for s in splits[split]):
        name = renames.get(sample.class_name, sample.class_name)
        if names.setdefault(sample.label, name) != name:
            raise DatasetError(
                f"Split file {str(split_file)!r} gives label {sample.label} two class names, "
                f"{names[sample.label]!r} and {name!r}; fix the file."
            )
    if sorted(names) != list(range(len(names))) or not splits["train"]:
        raise DatasetError(
            f"Split file {str(split_file)!r} must have training samples and labels 0..N-1; fix the file."
        )
    class_names = [names[label] for label in range(len(names))]
    check_class_names(class_names, f"Split file {str(split_file)!r}")
    splits = {k: [s._replace(class_name=class_names[s.label]) for s in v] for k, v in splits.items()}
    return SplitSamples(image_root, class_names, splits["train"], splits["val"], splits["test"])


def read_classnames_file(folder: Path) -> dict[str, str]:
    """``classnames.txt`` of ImageNet or a variant: ``{wnid: class name}`` in ImageNet's label order."""
    names_file = folder / "classnames.txt"
    if not names_file.is_file():
        raise DatasetError(
            f"{str(names_file)!r} is missing; `promptlab data fetch` writes it (or copy it from the imagenet folder)."
        )
    return dict(line.strip().split(" ", 1) for line in names_file.read_text().splitlines() if line.strip())


def _read_imagenet(folder: Path, info: DatasetInfo) -> SplitSamples:
    """CoOp's ImageNet: ``images/{train,val}/<wnid>/``, names from ``classnames.txt`` ("wnid name")."""
    wnid_to_name = read_classnames_file(folder)
    image_root = folder / info.image_dir
    wnids = sorted(os.listdir(image_root / "train"))
    class_names = [wnid_to_name[w] for w in wnids]
    _, train = _read_class_folders(image_root / "train", wnids)
    _, test = _read_class_folders(image_root / "val", wnids)
    train = [Sample(f"train/{s.path}", s.label, class_names[s.label]) for s in train]
    test = [Sample(f"val/{s.path}", s.label, class_names[s.label]) for s in test]
    return SplitSamples(image_root, class_names, train, list(test), test)  # CoOp validates on the test set


def _read_imagenet_variant(folder: Path, info: DatasetInfo) -> SplitSamples:
    """A test-only ImageNet variant: every image is in the test split (and, as in CoOp, in the training
    and validation splits, which the protocol never uses). V2's folders are ImageNet's labels ``0``..``999``; the
    others are named by WordNet id, labelled in their sorted order (200 classes for A and R).
    """
    wnid_to_name = read_classnames_file(folder)
    image_root = folder / info.image_dir
    if info.layout == "imagenet_v2":
        folders = [str(label) for label in range(len(wnid_to_name))]
        class_names = list(wnid_to_name.values())
    else:
        folders = [p.name for p in _class_folders(image_root)]
        class_names = [wnid_to_name[wnid] for wnid in folders]
    _, samples = _read_class_folders(image_root, folders)
    test = [Sample(s.path, s.label, class_names[s.label]) for s in samples]
    return SplitSamples(image_root, class_names, list(test), list(test), test)


def _read_fgvc_aircraft(folder: Path, info: DatasetInfo) -> SplitSamples:
    """CoOp's FGVCAircraft: ``variants.txt`` and ``images_variant_{train,val,test}.txt``."""
    class_names = [line.strip() for line in (folder / "variants.txt").read_text().splitlines() if line.strip()]
    label_of = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split in SPLITS:
        lines = (folder / f"images_variant_{split}.txt").read_text().splitlines()
        pairs = [line.strip().split(" ", 1) for line in lines if line.strip()]
        splits[split] = [Sample(f"{image}.jpg", label_of[name], name) for image, name in pairs]
    return SplitSamples(folder / info.image_dir, class_names, splits["train"], splits["val"], splits["test"])


def read_standard_dataset(name: str, root: str | Path) -> SplitSamples:
    """Reads one of the 11 standard datasets from ``root`` (CoOp's DATASET.ROOT)."""
    info = STANDARD_DATASETS[name]
    folder = Path(root) / info.folder
    if not folder.is_dir():
        get_it = (
            f"generate the toy world with `python -m promptlab.toy.world --out {folder}`"
            if name in TOY_DATASETS
            else f"fetch it with `promptlab data fetch {name} --root {root}`"
        )
        raise DatasetError(
            f"Dataset {name!r} not found at {str(folder)!r}; {get_it} or point --data.root at the folder that "
            "contains it."
        )
    try:
        if info.layout == "imagenet":
            return _read_imagenet(folder, info)
        if info.layout == "fgvc_aircraft":
            return _read_fgvc_aircraft(folder, info)
        if info.layout in ("imagenet_v2", "imagenet_wnids"):
            return _read_imagenet_variant(folder, info)
    except (OSError, KeyError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"Dataset {name!r} at {str(folder)!r} is incomplete or malformed: {error}.") from error
    assert info.split_file is not None  # every layout without one returned above
    return read_split_file(folder / info.split_file, folder / info.image_dir, info.renames)


def read_dataset(
    dataset: str,
    root: str,
    split_file: str | None,
    train_fraction: float,
    val_fraction: float,
    skip_bad_images: bool,
) -> tuple[SplitSamples, dict[Sample, str] | None]:
    """A dataset's splits as its layout gives them (an image folder, a CoOp split file or a standard dataset).

    Args:
        dataset: ``folder``, ``split`` or a standard dataset's name.
        root: the dataset's folder (the image root for ``split``).
        split_file: the CoOp split JSON of ``split``.
        train_fraction: share of a flat folder's images per class for training.
        val_fraction: share for validation.
        skip_bad_images: screen a flat folder for unreadable images before splitting it, so that bad
            images cannot empty a class's share.

    Returns:
        The splits, and the unreadable images of a screened folder with their reasons (None when the
        folder was not screened here).
    """
    screened: dict[Sample, str] | None = None

    def drop_unreadable(folder: Path, samples: list[Sample]) -> list[Sample]:
        nonlocal screened
        screened = find_unreadable(folder, samples)
        return [sample for sample in samples if sample not in screened]

    if dataset == "folder":
        data = read_image_folder(root, train_fraction, val_fraction, drop_unreadable if skip_bad_images else None)
    elif dataset == "split":
        data = read_split_file(cast(str, split_file), root)  # the data module requires it for 'split'
    else:
        data = read_standard_dataset(dataset, root)
    return data, screened


def check_class_names_of_splits(
    root: str, train: list[Sample], val: list[Sample], test: list[Sample], unreadable: int
) -> list[str]:
    """Class names by label, after checking that every class has training images and there are two.

    Args:
        root: the dataset, for the message.
        train: the training split.
        val: the validation split.
        test: the test split.
        unreadable: how many unreadable images were skipped, for the message.

    Raises:
        DatasetError: a class without readable training images, or fewer than two classes.
    """
    names = {s.label: s.class_name for split in (test, val, train) for s in split}
    if sorted(names) != list(range(len(names))) or {s.label for s in train} != set(names):
        skipped = f" ({unreadable} unreadable images were skipped)" if unreadable else ""
        raise DatasetError(
            f"Dataset {root!r} has classes without readable training images{skipped}; give every class some."
        )
    if len(names) < 2:
        raise DatasetError(f"Dataset {root!r} has {len(names)} class(es); a classifier needs at least 2.")
    return [names[label] for label in sorted(names)]
