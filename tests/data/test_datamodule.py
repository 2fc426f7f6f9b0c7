"""Reading datasets from disk: image folders, CoOp splits, standard datasets, and bad input."""

import json
import logging
from collections import Counter
from pathlib import Path

import lightning
import pytest
import torch

from promptlab.backbone import PreprocessConfig
from promptlab.data import DatasetError, FewShotDataModule, ImageLoadError
from promptlab.data.catalog import STANDARD_DATASETS
from promptlab.data.sources import read_standard_dataset
from promptlab.data.versioning import dvc_data_version
from tests.conftest import make_image_folder

PREPROCESS = PreprocessConfig(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def datamodule(root, **kwargs) -> FewShotDataModule:
    dm = FewShotDataModule(root=str(root), num_workers=0, **{"shots": 2, "batch_size": 4, **kwargs})
    dm.preprocess = PREPROCESS
    return dm


def test_image_folder_classes_splits_and_batches(image_folder):
    dm = datamodule(image_folder)
    assert dm.class_names == ["blue_triangle", "green_circle", "red_square"]
    assert len(dm.splits.train) == 6 and len(dm.splits.val) == 6 and len(dm.splits.test) == 9
    images, labels, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.long
    images, _, _ = next(iter(dm.test_dataloader()))
    assert images.shape[1:] == (3, 32, 32)


def test_train_test_subfolders(tmp_path):
    make_image_folder(tmp_path / "ds" / "train", 6)
    make_image_folder(tmp_path / "ds" / "test", 3, seed=1)
    dm = datamodule(tmp_path / "ds")
    assert len(dm.splits.train) == 6 and len(dm.splits.test) == 9
    assert all(s.path.startswith("test/") for s in dm.splits.test)


def test_without_val_folder_validation_never_uses_test_images(tmp_path, caplog):
    """Validation comes from the training images the few-shot draw left."""
    make_image_folder(tmp_path / "ds" / "train", 6)
    make_image_folder(tmp_path / "ds" / "test", 3, seed=1)
    with caplog.at_level(logging.INFO):
        dm = datamodule(tmp_path / "ds")
        val = dm.splits.val
    assert len(val) == 6 and all(s.path.startswith("train/") for s in val)
    assert not set(val) & set(dm.splits.train)
    assert "has no validation split: 6 of its training images validate instead" in caplog.text
    validated = {p for _, _, index in dm.val_dataloader() for p in index.tolist()}
    assert len(validated) == 6


def test_without_any_spare_training_image_there_is_no_validation(tmp_path, caplog):
    make_image_folder(tmp_path / "ds" / "train", 1)
    make_image_folder(tmp_path / "ds" / "test", 3, seed=1)
    with caplog.at_level(logging.WARNING):
        dm = datamodule(tmp_path / "ds")
        assert dm.splits.val == [] and dm.val_dataloader() == []
    assert "no validation images" in caplog.text


def test_saved_split_is_reusable(image_folder, tmp_path):
    dm = datamodule(image_folder, subsample_classes="base")
    dm.save_split(tmp_path / "split.json")
    again = datamodule(image_folder, dataset="split", split_file=str(tmp_path / "split.json"), shots=0)
    assert again.class_names == dm.class_names
    assert again.splits.train == dm.splits.train and again.splits.test == dm.splits.test


def test_empty_class_folder(image_folder):
    (image_folder / "empty_class").mkdir()
    with pytest.raises(DatasetError, match=r"Class folder '.*empty_class' has no images; add images"):
        _ = datamodule(image_folder).class_names


def test_non_image_files_are_skipped_with_warning(image_folder, caplog):
    (image_folder / "red_square" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        dm = datamodule(image_folder)
        _ = dm.class_names
    assert "Skipped 1 non-image file(s)" in caplog.text and "notes.txt" in caplog.text
    assert not any(s.path.endswith(".txt") for s in dm.splits.train + dm.splits.val + dm.splits.test)


def test_corrupt_image_is_named_and_can_be_skipped(image_folder):
    (image_folder / "red_square" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dm = datamodule(image_folder, shots=0, test_batch_size=64)
    samples = dm.splits.train + dm.splits.val + dm.splits.test
    with pytest.raises(ImageLoadError, match=r"Cannot read image '.*red_square/0.png'.*skip_bad_images"):
        for _ in dm._loader(samples, train=False):
            pass
    dm = datamodule(image_folder, shots=0, test_batch_size=64, skip_bad_images=True)
    (batch,) = list(dm._loader(samples, train=False))
    assert batch[0].shape[0] == len(samples) - 1


def test_skipped_images_are_warned_once_replaced_in_the_draw_and_recorded(tmp_path, caplog):
    """One warning per file, one summary, full shots, and data.json says what happened."""
    root = tmp_path / "ds"
    make_image_folder(root / "train", 8)
    make_image_folder(root / "test", 3, seed=1)
    dm = datamodule(root, shots=3, skip_bad_images=True)
    drawn = [s for s in dm.splits.train if s.class_name == "red_square"]
    for sample in drawn[:2]:  # two of red_square's drawn shots are broken now
        (root / sample.path).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dm = datamodule(root, shots=3, skip_bad_images=True)
    with caplog.at_level(logging.WARNING):
        splits = dm.splits
        for _ in range(2):  # two epochs meet no unreadable image: they were screened out
            for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
                list(loader)
    per_file = [r for r in caplog.records if r.getMessage().startswith("Skipping unreadable image")]
    summaries = [r for r in caplog.records if r.getMessage().startswith("Skipped 2 unreadable image(s)")]
    assert len(per_file) == 2 and len(summaries) == 1
    assert "replaced by other images of their class" in summaries[0].getMessage()
    assert Counter(s.class_name for s in splits.train) == {"blue_triangle": 3, "green_circle": 3, "red_square": 3}
    assert not {s.path for s in splits.train + splits.val + splits.test} & {s.path for s in drawn[:2]}

    trainer = lightning.Trainer(default_root_dir=tmp_path, logger=lightning.pytorch.loggers.CSVLogger(tmp_path))
    dm.trainer = trainer
    dm.setup("fit")
    info = json.loads(next(tmp_path.rglob("data.json")).read_text())
    assert info["train_images_per_class"] == {"blue_triangle": 3, "green_circle": 3, "red_square": 3}
    assert sorted(i["path"] for i in info["skipped_images"]) == sorted(s.path for s in drawn[:2])
    assert all("Cannot read image" in i["reason"] for i in info["skipped_images"])


def test_truncated_jpeg_is_named(image_folder):
    path = image_folder / "green_circle" / "big.jpg"
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 10)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    from promptlab.data.images import load_image

    with pytest.raises(ImageLoadError, match=r"big\.jpg"):
        load_image(path)


def test_duplicate_class_names(image_folder):
    (image_folder / "Red Square").mkdir()
    (image_folder / "red_square" / "1.png").rename(image_folder / "Red Square" / "1.png")
    with pytest.raises(DatasetError, match=r"duplicate class names 'Red Square' and 'red_square'"):
        _ = datamodule(image_folder).class_names


def test_single_class_is_refused(tmp_path):
    make_image_folder(tmp_path / "one")
    for name in ("green_circle", "blue_triangle"):
        for f in (tmp_path / "one" / name).iterdir():
            f.unlink()
        (tmp_path / "one" / name).rmdir()
    with pytest.raises(DatasetError, match="at least 2"):
        _ = datamodule(tmp_path / "one").class_names


def test_malformed_split_file(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train": [["a.jpg", "zero"]]}))
    with pytest.raises(DatasetError, match="not in CoOp format"):
        _ = datamodule(tmp_path, dataset="split", split_file=str(tmp_path / "split.json")).class_names


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="Unknown dataset 'oxfordpets'"):
        FewShotDataModule(dataset="oxfordpets")


def _write_split_dataset(root: Path, name: str, class_names: list[str]) -> None:
    info = STANDARD_DATASETS[name]
    image_root = root / info.folder / info.image_dir
    items = []
    for label, cname in enumerate(class_names):
        make_image_folder(image_root / "tmp", 1)
        for i, src in enumerate(sorted((image_root / "tmp").rglob("*.png"))[:3]):
            rel = f"{cname.replace(' ', '_')}/{i}.png"
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            src.rename(image_root / rel)
            items.append([rel, label, cname])
    split = {"train": items, "val": items[:2], "test": items}
    (root / info.folder / info.split_file).write_text(json.dumps(split))


def test_standard_split_dataset_with_renames_and_template(tmp_path):
    _write_split_dataset(tmp_path, "eurosat", ["AnnualCrop", "Forest"])
    dm = datamodule(tmp_path, dataset="eurosat", shots=1)
    assert dm.class_names == ["Annual Crop Land", "Forest"]
    assert dm.prompt_template == "a centered satellite photo of {}."
    images, _, _ = next(iter(dm.train_dataloader()))
    assert images.shape[0] == 2


def test_fgvc_aircraft_layout(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    make_image_folder(folder / "src", 2)
    (folder / "images").mkdir()
    for i, src in enumerate(sorted((folder / "src").rglob("*.png"))):
        src.rename(folder / "images" / f"{i:07d}.jpg")
    (folder / "variants.txt").write_text("707-320\nA300B4\n")
    for split in ("train", "val", "test"):
        (folder / f"images_variant_{split}.txt").write_text("0000000 707-320\n0000001 A300B4\n0000002 A300B4\n")
    data = read_standard_dataset("fgvc_aircraft", tmp_path)
    assert data.class_names == ["707-320", "A300B4"] and data.train[2].label == 1


def test_imagenet_layout(tmp_path):
    folder = tmp_path / "imagenet"
    make_image_folder(folder / "images" / "train", 2)
    make_image_folder(folder / "images" / "val", 1)
    (folder / "classnames.txt").write_text(
        "blue_triangle blue triangle\ngreen_circle green circle\nred_square red square\n"
    )
    data = read_standard_dataset("imagenet", tmp_path)
    assert data.class_names == ["blue triangle", "green circle", "red square"]
    assert len(data.train) == 6 and data.test[0].path.startswith("val/")


def test_missing_standard_dataset_says_where(tmp_path):
    with pytest.raises(
        DatasetError, match=r"Dataset 'dtd' not found at '.*dtd'; fetch it with `promptlab data fetch dtd"
    ):
        _ = datamodule(tmp_path, dataset="dtd").class_names
    with pytest.raises(
        DatasetError, match=r"'toy_shapes' not found .*; generate the toy world with `python -m promptlab"
    ):
        _ = datamodule(tmp_path, dataset="toy_shapes").class_names


def test_dvc_data_version(image_folder):
    assert dvc_data_version(image_folder) is None
    image_folder.with_name("images.dvc").write_text("outs:\n- md5: abc123.dir\n  path: images\n")
    assert dvc_data_version(image_folder / "red_square") == "dvc:abc123.dir"


def test_dvc_data_version_of_a_pipeline_output(image_folder):
    lock = "schema: '2.0'\nstages:\n  make:\n    cmd: x\n    outs:\n    - path: images\n      md5: def456.dir\n"
    image_folder.parent.joinpath("dvc.lock").write_text(lock)
    assert dvc_data_version(image_folder / "red_square") == "dvc:def456.dir"
    image_folder.parent.joinpath("dvc.lock").write_text("not: [valid")
    assert dvc_data_version(image_folder) is None


def test_prediction_inputs(image_folder, tmp_path):
    from promptlab.data.prediction_inputs import prediction_samples

    samples = prediction_samples([str(image_folder / "red_square"), str(image_folder / "green_circle" / "1.png")])
    assert len(samples) == 11 and all(Path(s.path).is_absolute() for s in samples)
    with pytest.raises(DatasetError, match="not an image file or folder"):
        prediction_samples([str(tmp_path / "missing.png")])
