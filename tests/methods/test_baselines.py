"""The linear probe's regularisation search and Tip-Adapter's cache logits and grid search."""

import torch
import torch.nn.functional as F

from promptlab.methods import LinearProbe, TipAdapter
from tests.builders import TINY, _features, _tip_adapter


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
