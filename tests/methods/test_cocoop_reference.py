"""CoCoOp against a transcription (in our own code) of KaiyangZhou/CoOp ``trainers/cocoop.py``: for each
image, the meta-net of its normalised feature is added to every context vector, the C prompts
``[SOS][ctx + pi][name.][EOS]`` are encoded at all 77 tokens, and the logits are
``logit_scale * f_i @ t_i.T``. Also its sanity checks: with ``linear2`` at zero CoCoOp is CoOp, and
with the context at "a photo of a" as well it is zero-shot CLIP."""

import pytest
import torch
import torch.nn.functional as F

from promptlab.backbone import FrozenCLIP
from promptlab.methods import CoCoOp
from tests.methods.test_coop_reference import reference_prompts

CLASSES = ["dog", "golden_retriever", "st. bernard", "red square"]


def reference_logits(model: CoCoOp, image_features: torch.Tensor) -> torch.Tensor:
    """The reference's forward: one text-encoder pass over all C prompts (77 tokens) per image."""
    backbone = model.backbone
    prompts, eot, _ = reference_prompts(backbone, CLASSES, None, 0, "end", ctx_init="a photo of a")
    w1, b1 = model.meta_net.linear1.weight, model.meta_net.linear1.bias
    w2, b2 = model.meta_net.linear2.weight, model.meta_net.linear2.bias
    rows = []
    for feature in image_features:  # normalised, as the reference normalises before the prompt learner
        bias = torch.relu(feature @ w1.T + b1) @ w2.T + b2  # (width,)
        image_prompts = prompts.clone()
        image_prompts[:, 1:5] = model.ctx + bias  # ctx_shifted, broadcast over the 4 context tokens
        text = backbone.encode_prompts(image_prompts, eot, normalize=False, truncate=False)
        text = text / text.norm(dim=-1, keepdim=True)
        rows.append(backbone.logit_scale * feature @ text.T)
    return torch.stack(rows)


def cocoop(seed: int = 0) -> CoCoOp:
    torch.manual_seed(seed)
    model = CoCoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None)
    with torch.no_grad():
        model.ctx.add_(torch.randn_like(model.ctx) * 0.3)  # moved away from "a photo of a", as after training
        model.meta_net.linear2.weight.normal_(std=0.3)
    return model


def image_features(n: int, dim: int) -> torch.Tensor:
    torch.manual_seed(1)
    return F.normalize(torch.randn(n, dim), dim=-1)


def test_logits_and_loss_match_the_reference():
    model = cocoop()
    features = image_features(5, model.backbone.embed_dim)
    labels = torch.tensor([0, 1, 2, 3, 0])
    expected = reference_logits(model, features)
    ours = model.training_losses(features, labels)
    assert (ours["logits"] - expected).abs().max() < 1e-4  # logits of scale ~14: 1e-5 relative
    assert (ours["loss"] - F.cross_entropy(expected, labels)).abs() < 1e-5
    per_image = ours["logits"].softmax(-1)
    assert (per_image - expected.softmax(-1)).abs().max() < 1e-5


def test_gradients_reach_the_context_and_the_meta_net_only():
    model = cocoop()
    features = image_features(3, model.backbone.embed_dim)
    model.training_losses(features, torch.tensor([0, 1, 2]))["loss"].backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"ctx", *(f"meta_net.{n}" for n, _ in model.meta_net.named_parameters())}


def test_without_the_shift_it_is_coop_with_its_context():
    model = cocoop()
    with torch.no_grad():
        model.meta_net.linear2.weight.zero_()
        model.meta_net.linear2.bias.zero_()
        features = image_features(4, model.backbone.embed_dim)
        coop = model.logits(features, model.class_features())  # CoOp's path: one context for every image
        assert (model.conditional_logits(features) - coop).abs().max() < 1e-4


def test_at_the_init_phrase_without_the_shift_it_is_zero_shot():
    torch.manual_seed(0)
    model = CoCoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None)
    with torch.no_grad():
        model.meta_net.linear2.weight.zero_()
        model.meta_net.linear2.bias.zero_()
        features = image_features(3, model.backbone.embed_dim)
        prompts = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]
        zero_shot = model.backbone.logit_scale * features @ model.backbone.encode_text(prompts).T
        assert (model.conditional_logits(features) - zero_shot).abs().max() < 1e-4


def test_each_image_prefix_is_encoded_once_exactly():
    """The prefix [SOS][ctx + pi] of each image is shared by its C prompts: encoding it once is exact."""
    model = cocoop()
    backbone: FrozenCLIP = model.backbone
    prefixes = torch.randn(3, 5, backbone.text_width)
    shared = backbone.encode_prefixed_prompts(prefixes, model.class_tokens, model.pool_index)
    for prefix, features in zip(prefixes, shared, strict=True):
        whole = torch.cat([prefix.expand(len(CLASSES), -1, -1), model.class_tokens], dim=1)
        assert (features - backbone.encode_prompts(whole, model.pool_index, truncate=False)).abs().max() < 1e-5


@pytest.mark.slow
def test_vit_b16_has_the_reference_parameter_count():
    model = CoCoOp(class_names=CLASSES, backbone="ViT-B-16", pretrained=None)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2_048 + 33_312  # ctx + meta-net
