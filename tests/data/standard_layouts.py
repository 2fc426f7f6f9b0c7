"""Small generated copies of the standard datasets in their real layouts, and archives of them as the
hosts publish them (the mirror's zips with a top folder, ImageNet-A/-R's tars, V2's tar.gz, Sketch's zip)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

from promptlab.data.catalog import EUROSAT_RENAMES, STANDARD_DATASETS
from promptlab.data.fetching.imagenet_classes import imagenet_wnids, write_classnames

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
SPLIT_OF_INDEX = ["train", "train", "val", "test"]  # 4 images per class: 2 train, 1 val, 1 test


def _image(path: Path, label: int, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (24, 24), (index * 20,) * 3)
    image.paste(COLOURS[label % 3], (4, 4, 20, 20))
    image.save(path)


def _class_names(name: str) -> list[str]:
    return list(EUROSAT_RENAMES)[:3] if name == "eurosat" else ["class_a", "class_b", "class_c"]


def write_standard_dataset(name: str, root: Path) -> Path:
    """Writes dataset ``name`` under ``root`` as ``--data.dataset NAME --data.root ROOT`` reads it."""
    info = STANDARD_DATASETS[name]
    folder = root / info.folder
    images = folder / info.image_dir
    folder.mkdir(parents=True, exist_ok=True)
    if info.layout == "split":
        splits: dict[str, list] = {"train": [], "val": [], "test": []}
        for label, class_name in enumerate(_class_names(name)):
            for index, split in enumerate(SPLIT_OF_INDEX):
                relative = f"{class_name}/{index}.jpg"
                _image(images / relative, label, index)
                splits[split].append([relative, label, class_name])
        (folder / info.split_file).write_text(json.dumps(splits))  # type: ignore[operator]
    elif info.layout == "fgvc_aircraft":
        variants = ["707-320", "A300B4", "DC-3"]
        (folder / "variants.txt").write_text("\n".join(variants) + "\n")
        for split in ("train", "val", "test"):
            lines = []
            for label, variant in enumerate(variants):
                for index in range(2 if split == "train" else 1):
                    image_id = f"{split}{label}{index}"
                    _image(images / f"{image_id}.jpg", label, index)
                    lines.append(f"{image_id} {variant}")
            (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    else:
        wnids = imagenet_wnids("a" if name in ("imagenet_a", "imagenet_r") else "")[:3]
        if info.layout == "imagenet":
            for split, count in (("train", 3), ("val", 1)):
                for label, wnid in enumerate(wnids):
                    for index in range(count):
                        _image(images / split / wnid / f"{index}.jpg", label, index)
            (folder / "classnames.txt").write_text(f"{wnids[0]} tench\n{wnids[1]} goldfish\n{wnids[2]} shark\n")
            return folder
        if info.layout == "imagenet_v2":
            wnids = [str(label) for label in range(1000)]  # V2 has every class, in folders named by label
        for label, wnid in enumerate(wnids):
            _image(images / wnid / "0.jpg", label, 0)
        write_classnames(folder)
    return folder


def archive_as_published(name: str, dataset: Path, out: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """The bytes of ``dataset`` archived as its host publishes it, with ``extra`` entries added."""
    if name in ("imagenet_a", "imagenet_r", "imagenet_v2"):  # tars of the image folder alone
        base = dataset / STANDARD_DATASETS[name].image_dir
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz" if name == "imagenet_v2" else "w") as tar:
            tar.add(base, arcname=base.name)
            for entry, content in (extra or {}).items():
                info = tarfile.TarInfo(entry)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return buffer.getvalue()
    top = "sketch" if name == "imagenet_sketch" else dataset.name
    base = dataset / "images" if name == "imagenet_sketch" else dataset
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.name != "classnames.txt":
                zipped.write(path, f"{top}/{path.relative_to(base)}")
        zipped.writestr(f"{top}/split_fewshot/shot_16-seed_1.pkl", b"not to be unpickled")
        for entry, content in (extra or {}).items():
            zipped.writestr(entry, content)
    return buffer.getvalue()
