"""The toy world generator: deterministic, readable by the normal data module, honest hold-outs."""

import hashlib
import json
import random
from pathlib import Path

import pytest

from promptlab.data import FewShotDataModule
from promptlab.toy.render import SHAPES, STYLES, random_attributes, render
from promptlab.toy.world import TASKS, caption, generate, held_out_combination

SMALL = {"per_class_and_style": 10, "unlabelled_per_class": 2, "pretrain_images": 40}


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("data") / "toy", seed=0, **SMALL)


def test_generator_is_deterministic_for_a_seed(small_world, tmp_path):
    assert tree_digest(generate(tmp_path / "again", seed=0, **SMALL)) == tree_digest(small_world)
    assert tree_digest(generate(tmp_path / "other", seed=1, **SMALL)) != tree_digest(small_world)


def test_every_shape_and_style_renders(tmp_path):
    rng = random.Random(0)
    for style in STYLES:
        for shape in SHAPES:
            image = render(random_attributes(rng, shapes=(shape,), styles=(style,)), rng)
            assert image.size == (32, 32) and image.mode == "RGB"


@pytest.mark.parametrize("task", list(TASKS))
def test_tasks_are_read_by_the_data_module(small_world, task):
    data = FewShotDataModule(root=str(small_world.parent), dataset=f"toy_{task}", shots=2, num_workers=0)
    assert data.class_names == list(SHAPES)
    train_styles, test_styles = TASKS[task]
    assert {s.path.split("/")[0] for s in data.splits.train} == set(train_styles)
    assert {s.path.split("/")[0] for s in data.splits.test} == set(test_styles)


def test_pretraining_captions_hold_out_combinations(small_world):
    records = [json.loads(line) for line in (small_world / "captions.jsonl").read_text().splitlines()]
    assert len(records) == SMALL["pretrain_images"]
    assert not any(held_out_combination(r["shape"], r["colour"]) for r in records)
    assert all((small_world / r["image"]).is_file() for r in records)


def test_captions_name_what_the_image_shows():
    rng = random.Random(0)
    attributes = random_attributes(rng)
    counts = {"shape": 0, "colour": 0, "both": 0}
    for _ in range(2000):
        text, named = caption(attributes, rng)
        assert all(getattr(attributes, k) == v and v in text for k, v in named.items())
        counts["both" if len(named) == 2 else next(iter(named))] += 1
    assert abs(counts["shape"] / 2000 - 0.4) < 0.04 and abs(counts["colour"] / 2000 - 0.2) < 0.04


def test_descriptions_and_class_names(small_world):
    names = (small_world / "classnames.txt").read_text().split()
    descriptions = json.loads((small_world / "descriptions.json").read_text())
    assert names == list(SHAPES) and set(descriptions) == set(SHAPES)
    assert all(len(sentences) >= 5 for sentences in descriptions.values())
    labels = json.loads((small_world / "unlabelled" / "labels.json").read_text())
    assert len(labels) == len(STYLES) * len(SHAPES) * SMALL["unlabelled_per_class"]


def test_knn_accuracy_ranks_encoders(small_world):
    from promptlab.toy.knn import knn_accuracy, load_split

    _, labels = load_split(small_world, "shapes", "train")
    assert len(labels) == 8 * 4

    def mean_colour(images):  # cannot tell shapes apart: near chance (1/8)
        return images.mean(dim=(2, 3))

    def pixels(images):  # raw pixels of the same style: clearly better than chance
        return images.flatten(1) - images.flatten(1).mean(1, keepdim=True)

    assert knn_accuracy(mean_colour, small_world, "shapes", k=3) < 0.35
    assert knn_accuracy(pixels, small_world, "shapes", k=1) > knn_accuracy(mean_colour, small_world, "shapes", k=1)
