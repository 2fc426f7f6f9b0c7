"""ONNX export: one graph per head kind that predicts what the torch classifier predicts, run by a
runtime that imports no torch and preprocesses exactly as promptlab does."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from promptlab.data import transforms
from promptlab.deploy.calibration import Calibration
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.onnx_runtime import OnnxClassifier, OnnxClassifierError, preprocess_image
from promptlab.export import export_classifier
from tests.builders import BUILDERS, CLASSES, ONE_PER_HEAD_KIND


@pytest.mark.parametrize("name", ONE_PER_HEAD_KIND)
def test_onnx_probabilities_match_the_torch_classifier(name, tmp_path):
    torch.manual_seed(0)
    model = BUILDERS[name][0]().eval()
    calibration = Calibration(temperature=0.7, fitted_on="test", num_images=3)
    torch_file = export_classifier(model, tmp_path / "c.safetensors", calibration=calibration, reject_below=0.4)
    onnx_file = export_classifier(model, tmp_path / "c.onnx", calibration=calibration, reject_below=0.4)
    reference, runtime = Classifier.load(torch_file, device="cpu"), OnnxClassifier(onnx_file)
    size = model.preprocess.size
    images = torch.randn(7, 3, size, size)  # a batch size the export never saw
    expected = reference.predict_proba(images)
    got = runtime.predict_proba(images.numpy())
    assert got.shape == (7, len(CLASSES))
    assert np.abs(got - expected.numpy()).max() < 1e-4
    assert (got.argmax(-1) == expected.argmax(-1).numpy()).all()
    assert runtime.class_names == CLASSES and runtime.temperature == 0.7 and runtime.reject_below == 0.4
    assert runtime.meta["head_kind"] == reference.meta["head"]["kind"]
    assert runtime.meta["preprocess"] == reference.preprocess.to_dict()


@pytest.mark.parametrize("size", [(40, 40), (57, 31), (31, 57), (300, 224), (23, 23)])
def test_runtime_preprocessing_is_promptlabs(size, tiny_backbone):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    cfg = tiny_backbone.preprocess
    expected = transforms.test_transform(cfg)(image).numpy()
    got = preprocess_image(image, cfg.size, cfg.mean, cfg.std, cfg.interpolation)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-6


def test_runtime_runs_without_torch_and_predicts_like_the_classifier(image_folder, tmp_path):
    torch.manual_seed(0)
    model = BUILDERS["MoCoOp"][0]().eval()
    onnx_file = export_classifier(model, tmp_path / "c.onnx")
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))[:6]
    script = f"""
import json, sys
from promptlab.deploy.onnx_runtime import OnnxClassifier
predictions = OnnxClassifier({str(onnx_file)!r}).predict({paths!r}, top_k=2, batch_size=4)
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
print(json.dumps([p.to_dict() for p in predictions]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    expected = Classifier.load(export_classifier(model, tmp_path / "c.safetensors"), device="cpu").predict(paths)
    assert [p["label"] for p in got] == [p.label for p in expected]
    assert np.allclose([p["probability"] for p in got], [p.probability for p in expected], atol=1e-4)


def test_runtime_refuses_files_that_are_not_promptlab_classifiers(tmp_path):
    with pytest.raises(OnnxClassifierError, match="does not exist"):
        OnnxClassifier(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(OnnxClassifierError, match="cannot be read"):
        OnnxClassifier(garbage)


def test_export_refuses_other_suffixes_and_bad_thresholds(tmp_path):
    from promptlab.deploy.prediction import ThresholdError
    from promptlab.export import ExportError

    model = BUILDERS["CoOp"][0]()
    with pytest.raises(ExportError, match=r"\.safetensors .* or \.onnx"):
        export_classifier(model, tmp_path / "c.pt")
    with pytest.raises(ThresholdError, match="reject_below"):
        export_classifier(model, tmp_path / "c.safetensors", reject_below=1.5)
