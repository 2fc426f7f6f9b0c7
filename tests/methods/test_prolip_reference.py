"""ProLIP against a transcription (in our own code) of astra-vision/ProLIP ``methods/ProLIP.py``: the
features before the last projection, ``CE(100 norm(P x) T) + lambda ||P - P_0||^2`` (MSELoss, sum),
Adam with eps 1e-4 and a cosine over full-batch steps, step t on view t of every image, lambda = 1/N."""

import pytest
import torch
import torch.nn.functional as F

from promptlab.methods import ProLIP, ZeroShotCLIP

CLASSES = ["dog", "golden_retriever", "red square"]


def prolip(**kwargs) -> ProLIP:
    torch.manual_seed(0)
    return ProLIP(class_names=CLASSES, backbone="clip-tiny", pretrained=None, **kwargs)


def reference_fit(model: ProLIP, views, labels, steps: int, lr: float, lam: float) -> torch.Tensor:
    """The reference's loop, transcribed; returns the trained P."""
    initial = model.initial_projection.clone()
    projection = initial.clone().requires_grad_(True)
    text = model.text_features  # (C, D), the normalised zero-shot classifier
    optimizer = torch.optim.Adam([projection], lr=lr, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step in range(steps):
        features = views[:, step % views.shape[1]] @ projection
        features = features / features.norm(dim=-1, keepdim=True)
        logits = model.backbone.logit_scale * features @ text.t()
        loss = F.cross_entropy(logits, labels) + lam * torch.nn.MSELoss(reduction="sum")(projection, initial)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return projection.detach()


def test_the_features_before_the_projection_give_open_clips_image_features():
    model = prolip()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = F.normalize(model.backbone.model.encode_image(images), dim=-1)  # open_clip's own encoder
        pooled = model.backbone.encode_image_pre_projection(images)
        assert pooled.shape[-1] == model.projection.shape[0] and model.backbone.model.visual.proj is model.projection
        assert torch.allclose(model.encode_images(pooled), expected, atol=1e-6)
        assert torch.allclose(model.encode_images(images), expected, atol=1e-6)


def test_at_init_it_is_zero_shot_clip_and_the_penalty_is_zero():
    model = prolip()
    zero_shot = ZeroShotCLIP(
        class_names=CLASSES, backbone="clip-tiny", pretrained=None, _backbone_module=model.backbone
    )
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images), zero_shot(images), atol=1e-5)
    assert float(model.penalty().detach()) == 0.0


@pytest.mark.parametrize("shots", [1, 4])
def test_training_matches_the_reference_loop(shots):
    model = prolip(steps=12, lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(3).repeat(shots)
    views = torch.randn(len(labels), 5, model.projection.shape[0], generator=generator)  # (N, V, width)
    expected = reference_fit(model, views, labels, steps=12, lr=1e-2, lam=1.0 / shots)
    assert model.fit_features(views, labels) == pytest.approx(1.0 / shots)
    assert (expected - model.initial_projection).abs().max() > 1e-3  # it moved: the check is not trivial
    assert torch.allclose(model.projection.detach(), expected, atol=1e-5)


def test_gradients_reach_the_projection_only_and_resnets_are_refused():
    model = prolip()
    pooled = torch.randn(4, model.projection.shape[0])
    model.regularisation_weight.fill_(0.5)
    model.training_losses(model.encode_images(pooled), torch.tensor([0, 1, 2, 0]))["loss"].backward()
    assert [name for name, p in model.named_parameters() if p.grad is not None] == ["projection"]
    with pytest.raises(ValueError, match="ProLIP trains a ViT's last image projection"):
        ProLIP(class_names=CLASSES, backbone="RN50", pretrained=None)


def test_the_feature_cache_keeps_features_before_the_projection_apart(image_folder, tmp_path):
    from promptlab.data import FewShotDataModule
    from promptlab.methods import CoOp

    shapes = {}
    for method in (prolip(), CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None)):
        data = FewShotDataModule(
            root=str(image_folder), num_workers=0, cache_dir=str(tmp_path / "cache"), cache_views=2
        )
        data.setup("fit")
        method.connect_data(data)
        shapes[type(method).__name__] = tuple(data.split_features("train", augmented=True)[0].shape)
    width, dim = prolip().projection.shape
    assert shapes["ProLIP"][-1] == width and shapes["CoOp"][-1] == dim
    keys = sorted(folder.name for folder in (tmp_path / "cache").iterdir())
    assert len(keys) == 2 and sum(key.endswith("-pre_projection") for key in keys) == 1
