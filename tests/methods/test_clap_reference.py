"""CLAP against a transcription (in our own code) of jusiro/CLAP ``trainers/adapters.py`` with the
released settings: ZS-LP's prototypes (the mean of unnormalised template features), lambda_c as
``init_lagrangian_multipliers`` computes it, and the training loop of ``run_epoch`` (SGD, a constant
warm-up epoch, then cosine; ``len(train_loader)`` batches of 256 rows of the shuffled view bank)."""

import math

import pytest
import torch
import torch.nn.functional as F

from promptlab.methods import CLAP

CLASSES = ["dog", "golden_retriever", "red square"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


def clap(**kwargs) -> CLAP:
    torch.manual_seed(0)
    return CLAP(class_names=CLASSES, backbone="clip-tiny", pretrained=None, templates=TEMPLATES, **kwargs)


def reference_prototypes(model: CLAP) -> torch.Tensor:
    """``:118-127``: per class, every template's text feature unnormalised, then their mean."""
    rows = []
    for name in CLASSES:
        texts = [t.format(name.replace("_", " ")) for t in TEMPLATES]
        tokens = model.backbone.tokenize(texts)
        rows.append(model.backbone.encode_token_ids(tokens, normalize=False).mean(0))
    return torch.stack(rows)


def reference_multipliers(prototypes: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, scale: float):
    """``init_lagrangian_multipliers``: per class, the mean zero-shot softmax probability of its true class."""
    zero_shot = prototypes / prototypes.norm(dim=-1, keepdim=True)
    features = features / features.norm(dim=-1, keepdim=True)
    probabilities = torch.softmax(scale * features @ zero_shot.t(), dim=-1)
    return torch.stack([probabilities[labels == c, c].mean() for c in range(len(CLASSES))])


def reference_fit(model: CLAP, views: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> torch.Tensor:
    """The released training loop, transcribed; returns the final W."""
    n, v, d = views.shape
    bank, bank_labels = views.reshape(n * v, d), labels.repeat_interleave(v)
    prototypes = reference_prototypes(model)
    multipliers = reference_multipliers(prototypes, bank, bank_labels, float(model.backbone.logit_scale))
    weight = prototypes.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        lr = 1e-5 if epoch < 1 else 0.1 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(n * v, generator=generator)
        for step in range(max(1, n // 256)):
            rows = order[step * 256 : (step + 1) * 256]
            features = bank[rows] / bank[rows].norm(dim=-1, keepdim=True)
            logits = model.backbone.logit_scale * features @ (weight / weight.norm(dim=-1, keepdim=True)).t()
            penalty = torch.stack(
                [multipliers[c] * ((weight[c] - prototypes[c]) ** 2).sum() for c in range(len(CLASSES))]
            )
            loss = F.cross_entropy(logits, bank_labels[rows]) + penalty.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return weight.detach()


def views_and_labels(model: CLAP, n: int, v: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    # Features near their class's prototype, so that zero-shot is right more often than not.
    prototypes = F.normalize(reference_prototypes(model), dim=-1)
    views = prototypes[labels][:, None] + 0.8 * torch.randn(n, v, model.backbone.embed_dim, generator=generator)
    return F.normalize(views, dim=-1), labels


def test_at_init_it_is_zero_shot_clip_and_the_penalty_is_zero():
    """The reference's own sanity check."""
    model = clap()
    assert torch.allclose(model.weight, reference_prototypes(model), atol=1e-6)
    images = F.normalize(torch.randn(4, model.backbone.embed_dim), dim=-1)
    zero_shot = model.backbone.logit_scale * images @ F.normalize(reference_prototypes(model), dim=-1).T
    assert torch.allclose(model(images), zero_shot, atol=1e-5)
    model.multipliers.fill_(0.7)
    assert float(model.penalty().detach()) == 0.0


@pytest.mark.parametrize("images", [12, 600])  # one step per epoch, and N // 256 = 2 steps
def test_training_matches_the_reference_loop(images):
    model = clap(epochs=4)
    views, labels = views_and_labels(model, images)
    expected = reference_fit(model, views, labels, epochs=4, seed=5)
    model.fit_features(views, labels, generator=torch.Generator().manual_seed(5))
    bank, bank_labels = views.reshape(-1, views.shape[-1]), labels.repeat_interleave(views.shape[1])
    lambdas = reference_multipliers(reference_prototypes(model), bank, bank_labels, float(model.backbone.logit_scale))
    assert torch.allclose(model.multipliers, lambdas, atol=1e-6) and bool(((lambdas > 0) & (lambdas < 1)).all())
    assert (expected - reference_prototypes(model)).abs().max() > 1e-3  # it moved: the check is not trivial
    assert torch.allclose(model.weight.detach(), expected, atol=1e-5)


def test_constraint_variants_and_gradients_only_in_the_weights():
    model = clap(constraint="corrected")
    views, labels = views_and_labels(model, 12)
    bank, bank_labels = views.reshape(-1, views.shape[-1]), labels.repeat_interleave(3)
    corrected = model.init_multipliers(bank, bank_labels)
    assert corrected.mean() == pytest.approx(1.0)
    model.hparams.constraint = "constant"
    assert torch.allclose(
        model.init_multipliers(bank, bank_labels), torch.full((3,), float(model.init_multipliers(bank, bank_labels)[0]))
    )
    model.hparams.constraint = "balanced"
    assert torch.equal(model.init_multipliers(bank, bank_labels), torch.ones(3))
    model.multipliers = torch.ones(3)
    with torch.no_grad():
        model.weight.add_(0.1)
    model.training_losses(bank[:5], bank_labels[:5])["loss"].backward()
    assert [name for name, p in model.named_parameters() if p.grad is not None] == ["weight"]
    with pytest.raises(ValueError, match="constraint must be one of"):
        clap(constraint="adaptative")
