"""Every standard dataset, generated small in its real layout, reads as CoOp reads it."""

import pytest

from promptlab.data.catalog import IMAGENET_VARIANTS, STANDARD_DATASETS
from promptlab.data.fetching.remote import DATASET_SOURCES
from promptlab.data.sources import read_standard_dataset
from tests.data.standard_layouts import write_standard_dataset

STANDARD = [name for name in STANDARD_DATASETS if not name.startswith("toy_")]


def test_every_standard_dataset_has_a_source():
    assert set(DATASET_SOURCES) == set(STANDARD)


@pytest.mark.parametrize("name", STANDARD)
def test_generated_layout_reads(name, tmp_path):
    write_standard_dataset(name, tmp_path)
    data = read_standard_dataset(name, tmp_path)
    classes = 1000 if name == "imagenet_v2" else 3
    assert len(data.class_names) == classes and data.train and data.test
    assert {s.label for s in data.test} == set(range(classes))
    if name in IMAGENET_VARIANTS:  # test sets only: every image is tested
        assert data.test == data.train and len(data.test) == classes
    assert all((data.image_root / s.path).is_file() for s in data.test[:5])


def test_imagenet_v2_labels_follow_imagenet_and_a_keeps_its_subset(tmp_path):
    write_standard_dataset("imagenet_v2", tmp_path)
    v2 = read_standard_dataset("imagenet_v2", tmp_path)
    assert v2.class_names[:2] == ["tench", "goldfish"] and v2.class_names[744] == "projectile"
    write_standard_dataset("imagenet_r", tmp_path)
    r = read_standard_dataset("imagenet_r", tmp_path)
    assert r.class_names == ["stingray", "goldfinch", "junco"]  # the first 3 of A/R's 200, labelled 0..2
