"""Exported classifiers: exact predictions, the predict API, and refusing bad files."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from promptlab.data import FewShotDataModule
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.classifier_file import ClassifierFileError
from promptlab.export import export_classifier
from promptlab.methods import CoOp

CLASSES = ["blue_triangle", "green_circle", "red_square"]


@pytest.fixture
def trained(image_folder):
    torch.manual_seed(0)
    model = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_ctx=4)
    with torch.no_grad():
        model.ctx.normal_(std=0.5)  # far from init, as after training
    return model


def test_export_predicts_exactly_what_the_module_predicts(trained, image_folder, tmp_path):
    path = export_classifier(trained, tmp_path / "c.safetensors", metrics={"accuracy": 0.5}, data_version="dvc:x")
    classifier = Classifier.load(path, device="cpu")
    data = FewShotDataModule(root=str(image_folder), num_workers=0, test_batch_size=64)
    data.preprocess = trained.preprocess
    images, _, _ = next(iter(data.test_dataloader()))
    with torch.no_grad():
        expected = trained(images).softmax(-1)
    got = classifier.predict_proba(images)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert torch.allclose(got, expected, atol=1e-6)
    assert classifier.meta["metrics"] == {"accuracy": 0.5} and classifier.meta["data_version"] == "dvc:x"
    assert classifier.meta["hparams"]["n_ctx"] == 4 and classifier.meta["method"] == "CoOp"


def test_predict_api_accepts_paths_pil_and_tensors(trained, image_folder, tmp_path):
    classifier = Classifier.load(export_classifier(trained, tmp_path / "c.safetensors"), device="cpu")
    path = image_folder / "red_square" / "0.png"
    from_path = classifier.predict_proba(str(path))
    from_pil = classifier.predict_proba(Image.open(path))
    tensor = classifier.transform(Image.open(path).convert("RGB"))
    from_tensor = classifier.predict_proba([tensor])
    assert torch.allclose(from_path, from_pil) and torch.allclose(from_path, from_tensor)
    predictions = classifier.predict([path] * 5, top_k=2, batch_size=2)
    assert len(predictions) == 5 and len(predictions[0].top_k) == 2
    assert predictions[0].label in CLASSES and 0 < predictions[0].probability <= 1


def _meta_and_tensors(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_tampered_class_features_are_refused(trained, tmp_path):
    path = export_classifier(trained, tmp_path / "c.safetensors")
    header, tensors = _meta_and_tensors(path)
    tensors["head.weight"] = tensors["head.weight"].flip(0)
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(ClassifierFileError, match="modified after export"):
        Classifier.load(path)


def test_tampered_metadata_is_refused(trained, tmp_path):
    path = export_classifier(trained, tmp_path / "c.safetensors")
    header, tensors = _meta_and_tensors(path)
    meta = json.loads(header["promptlab"])
    meta["class_names"] = ["a", "b", "c"]
    save_file(tensors, str(path), metadata={**header, "promptlab": json.dumps(meta)})
    with pytest.raises(ClassifierFileError, match="modified after export"):
        Classifier.load(path)


def test_truncated_file_is_refused(trained, tmp_path):
    path = export_classifier(trained, tmp_path / "c.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ClassifierFileError, match="truncated or not a safetensors file"):
        Classifier.load(path)


def test_other_safetensors_file_is_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ClassifierFileError, match="not a promptlab classifier"):
        Classifier.load(tmp_path / "other.safetensors")


def test_classifier_for_other_weights_is_refused(tmp_path):
    weights = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_ctx=2)
        weights[seed] = tmp_path / f"w{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in model.backbone.model.state_dict().items()}, str(weights[seed]))
    model = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, weights_path=str(weights[0]), n_ctx=2)
    path = export_classifier(model, tmp_path / "c.safetensors")  # by reference: weights not embedded
    assert Classifier.load(path, weights_path=str(weights[0])).meta["backbone"]["embedded"] is False
    with pytest.raises(ClassifierFileError, match="exported with other weights"):
        Classifier.load(path, weights_path=str(weights[1]))


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.manual_seed(0)
    rn = CoOp(class_names=CLASSES, backbone="clip-tiny-rn", pretrained=None, n_ctx=2)
    rn_weights = tmp_path / "rn.safetensors"
    save_file({k: v.contiguous() for k, v in rn.backbone.model.state_dict().items()}, str(rn_weights))
    vit_weights = tmp_path / "vit.safetensors"
    vit = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_ctx=2)
    save_file({k: v.contiguous() for k, v in vit.backbone.model.state_dict().items()}, str(vit_weights))
    model = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_ctx=2, weights_path=str(vit_weights))
    path = export_classifier(model, tmp_path / "c.safetensors")
    with pytest.raises(ClassifierFileError, match="Cannot rebuild backbone 'clip-tiny'"):
        Classifier.load(path, weights_path=str(rn_weights))
