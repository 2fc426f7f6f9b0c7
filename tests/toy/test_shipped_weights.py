"""The shipped toy weights load offline by name and reproduce the pretraining reports' numbers."""

import json
from pathlib import Path

import pytest

from promptlab.backbone import FrozenCLIP
from promptlab.toy.world import generate

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory) -> Path:
    # The task images are identical with or without the pretraining images, which are slow to render.
    return generate(tmp_path_factory.mktemp("data") / "toy", pretrain_images=0)


def test_toy_clip_gives_the_reported_zero_shot_accuracy(toy_world):
    from promptlab.toy.pretrain_clip import zero_shot_accuracy

    report = json.loads((BENCHMARKS / "pretraining_clip.json").read_text())
    backbone = FrozenCLIP("toy-clip", pretrained="promptlab")
    for split in ("val", "test"):
        for key, accuracy in report[f"zero_shot_{split}"].items():
            task, template = key.split(" / ")
            measured = zero_shot_accuracy(backbone, toy_world, task, template, split=split)
            assert measured == pytest.approx(accuracy, abs=0.01), (split, key)


@pytest.mark.parametrize("task", ["shapes", "style_shift", "mixed"])
def test_toy_dino_gives_the_reported_knn_accuracy_and_beats_toy_clip(toy_world, task):
    from promptlab.toy.dino import load_toy_dino
    from promptlab.toy.knn import knn_accuracy, normalise

    reported = json.loads((BENCHMARKS / "pretraining_dino.json").read_text())["knn_shape_accuracy"]
    dino = load_toy_dino()
    assert not any(p.requires_grad for p in dino.parameters())
    measured = knn_accuracy(lambda x: dino(normalise(x)), toy_world, task)
    assert measured == pytest.approx(reported[f"toy-dino / {task}"], abs=0.01)
    clip = FrozenCLIP("toy-clip", pretrained="promptlab")
    clip_knn = knn_accuracy(lambda x: clip.encode_image(normalise(x)), toy_world, task)
    clip_reported = json.loads((BENCHMARKS / "pretraining_clip.json").read_text())["knn"][task]
    assert clip_knn == pytest.approx(clip_reported, abs=0.01)
    assert measured > clip_knn  # DINO's features separate the shapes better: NoLA's premise
