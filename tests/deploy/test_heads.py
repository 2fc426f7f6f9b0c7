"""Typed export heads: what the file records of them, unknown kinds refused, and files of format
version 1 still load and predict the same."""

import json

import pytest
import torch
from safetensors import safe_open

from promptlab.deploy.classifier import Classifier
from promptlab.deploy.classifier_file import ClassifierFileError, read_classifier_file, write_classifier_file
from promptlab.export import export_classifier
from tests.builders import BUILDERS, _coop, _nola


def test_visual_prompts_are_recorded_in_the_file(tmp_path):
    path = export_classifier(_nola(), tmp_path / "c.safetensors")
    meta, tensors = read_classifier_file(path)
    assert meta["backbone"]["visual_prompts"] == 3 and tensors["visual.visual_prompts"].shape[0] == 3


def _write_version_1(model, path):
    """A format version 1 file: class_features (and router.*) + logit_scale, no head record."""
    current = export_classifier(model, path.with_suffix(".v2.safetensors"))
    meta, tensors = read_classifier_file(current)
    head = meta.pop("head")
    del meta["format"], meta["format_version"], meta["backbone"]["visual_prompts"]
    old = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    old["logit_scale"] = torch.tensor([head["scale"]])
    if head["kind"] == "mixture":
        old |= {
            "class_features": tensors["head.experts"],
            "router.weight": tensors["head.router_weight"],
            "router.bias": tensors["head.router_bias"],
        }
    else:
        old["class_features"] = tensors["head.weight"]
    return write_classifier_file(path, meta, old, format_version=1)


# The head kinds format version 1 could hold: linear (CoOp; NoLA with its prompted tower) and mixture.
@pytest.mark.parametrize("name", ["CoOp", "MoCoOp", "NoLA"])
def test_version_1_files_still_load_and_predict_the_same(name, tmp_path):
    torch.manual_seed(0)
    model = BUILDERS[name][0]().eval()
    path = _write_version_1(model, tmp_path / "old.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["promptlab"])["format_version"] == 1
    classifier = Classifier.load(path, device="cpu")
    assert classifier.head.kind == BUILDERS[name][1].kind
    images = torch.randn(4, 3, model.preprocess.size, model.preprocess.size)
    with torch.no_grad():
        expected = model(images).softmax(-1)
    got = classifier.predict_proba(images)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    if name != "NoLA":  # a version-1 file holds a head of normalised features; NoLA's now takes raw ones
        assert torch.allclose(got, expected, atol=1e-5)


def test_unknown_head_kind_is_refused(tmp_path):
    path = export_classifier(_coop(), tmp_path / "c.safetensors")
    meta, tensors = read_classifier_file(path)
    meta["head"] = {"kind": "hologram"}
    del meta["format"], meta["format_version"]
    write_classifier_file(path, meta, tensors)
    with pytest.raises(ClassifierFileError, match="Unknown head kind 'hologram'"):
        Classifier.load(path)
