"""The familiarity rule of "none of these": its score, leave-one-out and threshold against brute force,
the rule each prediction names, and the reference travelling from a run's test to the exported files."""

import json

import pytest
import torch
import torch.nn.functional as F

from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.open_set import (
    Familiarity,
    fit_threshold,
    held_out_familiarity,
    subsample_reference,
)
from promptlab.deploy.prediction import UNFAMILIAR, UNSURE, ThresholdError, check_unfamiliar_below, rank
from promptlab.toy.content_free import KINDS, content_free_images


def _reference(n: int = 30, dim: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator), torch.arange(n) % classes


def _brute_force(feature: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> float:
    f, r = F.normalize(feature, dim=0), F.normalize(reference, dim=-1)
    nearest_image = max(float(f @ row) for row in r)
    means = [F.normalize(r[labels == c].mean(0), dim=0) for c in labels.unique()]
    return max(float(f @ m) for m in means) + nearest_image


def test_familiarity_is_the_nearest_class_mean_plus_the_nearest_reference_image():
    reference, labels = _reference()
    queries = torch.randn(5, 8)
    got = Familiarity(reference, labels, num_classes=3)(queries)
    expected = torch.tensor([_brute_force(q, reference, labels) for q in queries])
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("chunk", [4096, 5])  # every row at once, and a few at a time
def test_held_out_familiarity_scores_each_reference_image_without_it(chunk):
    reference, labels = _reference(n=13)
    labels[:3] = torch.tensor([0, 1, 1])
    labels[12] = 3  # a class of one image is scored against the other classes only
    got = held_out_familiarity(reference, labels, chunk=chunk)
    for i in range(len(reference)):
        others = torch.arange(len(reference)) != i
        expected = _brute_force(reference[i], reference[others], labels[others])
        assert got[i] == pytest.approx(expected, abs=1e-5), i


def test_the_threshold_keeps_the_asked_share_and_the_reference_is_capped_per_class():
    scores = torch.linspace(0, 1, 101)
    threshold = fit_threshold(scores)
    assert float((scores >= threshold).float().mean()) == pytest.approx(0.95, abs=0.011)
    labels = torch.tensor([0] * 100 + [1] * 3)
    kept = subsample_reference(labels, per_class=10)
    assert torch.bincount(labels[kept]).tolist() == [10, 3]
    assert torch.equal(kept, subsample_reference(labels, per_class=10))  # the same draw every time


def test_each_prediction_names_the_rule_that_rejected_it():
    probabilities = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.55, 0.45], [0.9, 0.1]])
    familiarity = torch.tensor([1.8, 1.8, 0.4, 0.4])
    predictions = rank(probabilities, ["a", "b"], 2, reject_below=0.6, familiarity=familiarity, unfamiliar_below=1.0)
    assert [p.rejected_by for p in predictions] == [None, UNSURE, UNFAMILIAR, UNFAMILIAR]
    assert [p.none_of_these for p in predictions] == [False, True, True, True]
    assert predictions[2].label == "a" and predictions[2].familiarity == pytest.approx(0.4)
    assert predictions[2].to_dict()["rejected_by"] == "unfamiliar"
    off = rank(probabilities, ["a", "b"], 1, familiarity=familiarity, unfamiliar_below=-2)
    assert not any(p.none_of_these for p in off)
    with pytest.raises(ThresholdError, match="--unfamiliar_below must be a familiarity from -2"):
        check_unfamiliar_below(2.5, "--unfamiliar_below")


def test_content_free_pictures_are_of_every_kind_and_reproducible():
    images = content_free_images(per_kind=3, size=16)
    assert [kind for kind, _ in images] == [k for k in KINDS for _ in range(3)]
    again = content_free_images(per_kind=3, size=16)
    assert all(a.tobytes() == b.tobytes() for (_, a), (_, b) in zip(images, again, strict=True))


@pytest.fixture
def tested_run(image_folder, tmp_path):
    runs = tmp_path / "runs"
    args = [
        "-c",
        "configs/tiny/coop.yaml",
        f"--data.root={image_folder}",
        f"--trainer.logger.init_args.save_dir={runs}",
    ]
    assert main(["fit", *args, "--trainer.max_epochs=1"]) == 0
    return runs / "lightning_logs" / "version_0"


def test_a_runs_test_fits_the_rule_and_every_export_carries_it(tested_run, image_folder, tmp_path):
    from promptlab.deploy.onnx_runtime import OnnxClassifier

    record = json.loads((tested_run / "test_metrics.json").read_text())["open_set"]
    assert record["fitted_on"].startswith("held-out known images: 6 validation images")
    assert record["reference_images"] > 0 and -2 <= record["unfamiliar_below"] <= 2
    assert main(["export", "--run", str(tested_run)]) == 0
    classifier = Classifier.load(tested_run / "classifier.safetensors", device="cpu")
    assert classifier.unfamiliar_below == record["unfamiliar_below"] and classifier.familiarity is not None
    assert len(classifier.familiarity.reference) == record["reference_images"]

    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    features, _ = classifier.features_and_probabilities(paths)
    predictions = classifier.predict(paths)
    expected = classifier.familiarity(features)
    assert torch.allclose(torch.tensor([p.familiarity for p in predictions]), expected, atol=1e-5)
    strict = classifier.predict(paths, unfamiliar_below=2.0)
    assert all(p.rejected_by == UNFAMILIAR for p in strict)

    onnx_file = tmp_path / "c.onnx"
    assert main(["export", "--classifier", str(tested_run / "classifier.safetensors"), "-o", str(onnx_file)]) == 0
    runtime = OnnxClassifier(onnx_file)
    assert runtime.unfamiliar_below == classifier.unfamiliar_below
    from_onnx = runtime.predict(paths)
    assert max(abs(a.familiarity - b.familiarity) for a, b in zip(predictions, from_onnx, strict=True)) < 1e-4
    assert [p.rejected_by for p in from_onnx] == [p.rejected_by for p in predictions]


def test_removing_classes_keeps_their_reference_and_adding_one_drops_the_rule(tested_run, tmp_path):
    from promptlab.export import export_run

    kept = Classifier.load(export_run(tested_run, tmp_path / "two.safetensors", classes=["red_square", "green_circle"]))
    assert kept.familiarity is not None and set(kept.familiarity.labels.tolist()) == {0, 1}
    added = export_run(
        tested_run, tmp_path / "four.safetensors", classes=["blue_triangle", "green_circle", "red_square", "cat"]
    )
    assert Classifier.load(added).familiarity is None  # the new class's images would all look unfamiliar


def test_the_reference_is_drawn_from_at_most_the_asked_number_of_training_images(image_folder):
    from promptlab.data import FewShotDataModule
    from promptlab.methods import CoOp

    data = FewShotDataModule(root=str(image_folder), num_workers=0, cache_features=False)
    data.setup("fit")
    CoOp(class_names=sorted(data.class_names), backbone="clip-tiny", pretrained=None).connect_data(data)
    everything = sum(len(batch[1]) for batch in data.reference_dataloader())
    assert everything == len(data.splits.train) > 4
    assert sum(len(batch[1]) for batch in data.reference_dataloader(max_images=4)) == 4
