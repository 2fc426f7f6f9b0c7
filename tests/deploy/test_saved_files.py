"""Files saved by the release with the flat module layout (``tests/fixtures/saved``) load and
predict exactly as they did: classifier files of format versions 1 and 2, a run's checkpoint,
its config (whose class paths name the method) and the run folder itself."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from promptlab.cli import main
from promptlab.data import transforms
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_run, load_method

SAVED = Path(__file__).parents[1] / "fixtures" / "saved"
EXPECTED = json.loads((SAVED / "expected.json").read_text())
IMAGES = [str(SAVED / "images" / name) for name in EXPECTED["images"]]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_classifier_files_of_both_format_versions_predict_as_when_saved(version):
    classifier = Classifier.load(SAVED / f"coop-{version}.safetensors", device="cpu")
    assert classifier.class_names == EXPECTED["class_names"]
    got = classifier.predict_proba(IMAGES)
    assert torch.allclose(got, torch.tensor(EXPECTED["probabilities"][version]), atol=1e-6)


def test_the_checkpoint_rebuilds_the_method_that_saved_it():
    model = load_method(next((SAVED / "run" / "checkpoints").glob("*.ckpt"))).eval()
    transform = transforms.test_transform(model.preprocess)
    images = torch.stack([transform(Image.open(path).convert("RGB")) for path in IMAGES])
    with torch.no_grad():
        got = model(images).softmax(-1)
    assert torch.allclose(got, torch.tensor(EXPECTED["probabilities"]["checkpoint"]), atol=1e-6)


def test_the_run_folder_exports_the_classifier_it_exported_then(tmp_path):
    exported = export_run(SAVED / "run", tmp_path / "again.safetensors")
    got = Classifier.load(exported, device="cpu").predict_proba(IMAGES)
    assert torch.allclose(got, torch.tensor(EXPECTED["probabilities"]["v2"]), atol=1e-6)


def test_the_saved_config_still_names_classes_that_import(tmp_path, image_folder):
    config = tmp_path / "config.yaml"
    config.write_text((SAVED / "run" / "config.yaml").read_text())
    code = main(
        [
            "fit",
            "-c",
            str(config),
            f"--data.root={image_folder}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            "--trainer.fast_dev_run=1",
        ]
    )
    assert code == 0
