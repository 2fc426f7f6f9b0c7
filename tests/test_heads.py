"""Typed export heads: every method's exported classifier predicts what the module predicts, and
files of format version 1 still load."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from promptlab.classifier import Classifier
from promptlab.classifier_file import ClassifierFileError, read_classifier_file, write_classifier_file
from promptlab.export import export_classifier
from promptlab.heads import CacheHead, LinearHead, MixtureHead
from promptlab.methods import CoOp, LinearProbe, MoCoOp, NoLA, TipAdapter, TipAdapterF

CLASSES = ["blue_triangle", "green_circle", "red_square"]
TINY = {"class_names": CLASSES, "backbone": "clip-tiny", "pretrained": None}


def _coop():
    model = CoOp(**TINY, n_ctx=4)
    with torch.no_grad():
        model.ctx.normal_(std=0.5)  # far from init, as after training
    return model


def _mocoop():
    model = MoCoOp(**TINY)
    with torch.no_grad():
        for context in model.contexts:
            context.add_(torch.randn_like(context) * 0.3)
        model.router.weight.normal_(std=2.0)
    return model


def _nola():
    model = NoLA(**TINY, n_prompts=3)
    with torch.no_grad():
        model.visual_prompts.normal_(std=0.5)
        model.head.weight.add_(torch.randn_like(model.head.weight) * 0.1)
    return model


def _features(n: int, dim: int, views: int | None = None) -> torch.Tensor:
    shape = (n, views, dim) if views else (n, dim)
    return F.normalize(torch.randn(*shape), dim=-1)


def _linear_probe():
    model = LinearProbe(**TINY)
    dim = model.backbone.embed_dim
    labels = torch.arange(12) % 3
    model.fit_features(_features(12, dim), labels, _features(6, dim), torch.arange(6) % 3)
    return model


def _tip_adapter(cls=TipAdapter):
    model = cls(**TINY)
    model.build_cache(_features(9, model.backbone.embed_dim, views=2), torch.arange(9) % 3)
    with torch.no_grad():
        model.cache_keys.add_(torch.randn_like(model.cache_keys) * 0.1)  # as after -F's training
    model.alpha.fill_(2.3)
    model.beta.fill_(4.1)
    return model


BUILDERS = {
    "CoOp": (_coop, LinearHead),
    "MoCoOp": (_mocoop, MixtureHead),
    "NoLA": (_nola, LinearHead),
    "LinearProbe": (_linear_probe, LinearHead),
    "TipAdapter": (_tip_adapter, CacheHead),
    "TipAdapterF": (lambda: _tip_adapter(TipAdapterF), CacheHead),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_exported_classifier_predicts_what_the_module_predicts(name, tmp_path):
    torch.manual_seed(0)
    build, head_type = BUILDERS[name]
    model = build().eval()
    path = export_classifier(model, tmp_path / "c.safetensors")
    classifier = Classifier.load(path, device="cpu")
    assert isinstance(classifier.head, head_type) and classifier.meta["head"]["kind"] == head_type.kind
    size = model.preprocess.size
    images = torch.randn(8, 3, size, size)
    with torch.no_grad():
        expected = model(images).softmax(-1)
    got = classifier.predict_proba(images)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert torch.allclose(got, expected, atol=1e-5)


def test_visual_prompts_are_recorded_in_the_file(tmp_path):
    path = export_classifier(_nola(), tmp_path / "c.safetensors")
    meta, tensors = read_classifier_file(path)
    assert meta["backbone"]["visual_prompts"] == 3 and tensors["visual.visual_prompts"].shape[0] == 3


def _write_version_1(model, path):
    """What promptlab 0.1 wrote: class_features (and router.*) + logit_scale, no head record."""
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


def test_linear_probe_search_picks_the_regularisation_on_validation():
    """Separable validation data: the chosen C must classify it, and the module must agree with scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(0)
    model = LinearProbe(**TINY)
    dim = model.backbone.embed_dim
    centres = _features(3, dim)
    train_labels, val_labels = torch.arange(30) % 3, torch.arange(15) % 3
    train = F.normalize(centres[train_labels] + 0.3 * torch.randn(30, dim), dim=-1)
    val = F.normalize(centres[val_labels] + 0.3 * torch.randn(15, dim), dim=-1)
    c = model.fit_features(train, train_labels, val, val_labels)
    reference = LogisticRegression(C=c, max_iter=1000, random_state=0).fit(train.numpy(), train_labels.numpy())
    ours = model.logits(val, model.class_features()).softmax(-1)
    assert torch.allclose(ours, torch.from_numpy(reference.predict_proba(val.numpy())).float(), atol=1e-5)
    assert (ours.argmax(-1) == val_labels).float().mean() == 1.0


def test_linear_probe_without_validation_cross_validates():
    torch.manual_seed(0)
    model = LinearProbe(**TINY, default_c=1e-6)
    dim = model.backbone.embed_dim
    labels = torch.arange(30) % 3
    features = F.normalize(_features(3, dim)[labels] + 0.3 * torch.randn(30, dim), dim=-1)
    assert model.fit_features(features, labels) > 1e-6  # searched, not the default
    assert (model.logits(features, model.class_features()).argmax(-1) == labels).all()
    assert model.fit_features(features[:3], labels[:3]) == 1e-6  # one image per class: nothing to search with


def test_tip_adapter_logits_are_the_reference_formula():
    """clip + alpha * exp(-beta (1 - f K^T)) V, transcribed from the paper's code."""
    torch.manual_seed(0)
    model = _tip_adapter()
    f = _features(5, model.backbone.embed_dim)
    clip = model.backbone.logit_scale * f @ model.text_features.T  # the reference's 100 is OpenAI CLIP's scale
    affinity = f @ model.cache_keys.T
    expected = clip + 2.3 * ((-1) * (4.1 - 4.1 * affinity)).exp() @ model.cache_values
    assert torch.allclose(model.logits(f, model.class_features()), expected, atol=1e-5)


def test_tip_adapter_search_finds_the_best_grid_point_on_validation():
    torch.manual_seed(0)
    model = TipAdapter(**TINY, search_step=(10, 5))
    dim = model.backbone.embed_dim
    model.build_cache(_features(9, dim, views=3), torch.arange(9) % 3)

    features, labels = _features(6, dim, views=1), torch.arange(6) % 3

    class Data:
        def split_features(self, split, augmented):
            return features, labels

    model.data = Data()
    model.search_on_validation()
    best = max(
        float((model.tip_logits(features[:, 0], a, b).argmax(-1) == labels).float().mean())
        for b in [i * 6.9 / 10 + 0.1 for i in range(10)]
        for a in [i * 2.9 / 5 + 0.1 for i in range(5)]
    )
    chosen = float((model.logits(features[:, 0], None).argmax(-1) == labels).float().mean())
    assert chosen == best
