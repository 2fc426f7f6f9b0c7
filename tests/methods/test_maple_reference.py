"""MaPLe against a transcription (in our own code) of muzairkhattak/multimodal-prompt-learning
``trainers/maple.py`` and its ``clip/model.py``: the text prompt ``[SOS][ctx] of a {class}. [EOS]``, the
text tower replacing positions 1..n before blocks 1..J-1 with the compound prompts, the image tower
with ``proj(ctx)`` appended after the patches (before ``ln_pre``, no positional embedding) and the
last n tokens replaced before blocks 1..J-1 by each compound prompt's own projection. IVLP (same
repository, ``trainers/independentVL.py``) is the same with image tokens of their own per block."""

import pytest
import torch
import torch.nn.functional as F

from promptlab.backbone import BackboneError, FrozenCLIP
from promptlab.methods import IVLP, MaPLe

CLASSES = ["dog", "golden_retriever", "st. bernard", "red square"]


def plain_copy(model: MaPLe):
    """The same CLIP weights in a model without promptlab's deep-prompt hooks."""
    plain = FrozenCLIP("clip-tiny", None).model
    plain.load_state_dict(model.backbone.model.state_dict())
    return plain


def reference_text(model: MaPLe, plain) -> torch.Tensor:
    """(C, D) normalised text features as the reference's TextEncoder computes them (77 tokens)."""
    n, depth = model.n_ctx, model.prompt_depth
    names = [c.replace("_", " ") for c in CLASSES]
    tokens = model.backbone.tokenize([f"a photo of a {name}." for name in names])  # the prompt string stays whole
    embeddings = plain.token_embedding(tokens).clone()
    embeddings[:, 1 : 1 + n] = model.ctx  # the learned context replaces "a photo"
    x = embeddings + plain.positional_embedding
    for i, block in enumerate(plain.transformer.resblocks):
        if 1 <= i < depth:
            x = torch.cat([x[:, :1], model.compound_prompts_text[i - 1].expand(len(x), -1, -1), x[:, 1 + n :]], 1)
        x = block(x, attn_mask=plain.attn_mask)
    x = plain.ln_final(x)[torch.arange(len(x)), tokens.argmax(-1)] @ plain.text_projection
    return F.normalize(x, dim=-1)


def image_prompt(model: MaPLe, layer: int) -> torch.Tensor:
    """The image tokens of a block: MaPLe's projections of the text tokens, or IVLP's own."""
    if isinstance(model, IVLP):
        return model.visual_prompts[layer]
    if layer == 0:
        return model.proj(model.ctx)
    return model.compound_prompt_projections[layer - 1](model.compound_prompts_text[layer - 1])


def reference_image(model: MaPLe, plain, images: torch.Tensor) -> torch.Tensor:
    """(B, D) normalised image features as the reference's ImageEncoder computes them."""
    visual, depth = plain.visual, model.prompt_depth
    n = model.n_ctx_vision if isinstance(model, IVLP) else model.n_ctx
    x = visual.conv1(images).flatten(2).transpose(1, 2)  # (B, N, width)
    cls = visual.class_embedding.expand(len(x), 1, -1)
    x = torch.cat([cls, x], 1) + visual.positional_embedding
    x = torch.cat([x, image_prompt(model, 0).expand(len(x), -1, -1)], 1)  # appended, no positional embedding
    x = visual.ln_pre(x)
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i < depth:
            x = torch.cat([x[:, :-n], image_prompt(model, i).expand(len(x), -1, -1)], 1)
        x = block(x)
    return F.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)


def maple(depth: int = 2, cls: type[MaPLe] = MaPLe, **kwargs) -> MaPLe:
    torch.manual_seed(0)
    model = cls(class_names=CLASSES, backbone="clip-tiny", pretrained=None, prompt_depth=depth, **kwargs).eval()
    with torch.no_grad():
        model.ctx.add_(torch.randn_like(model.ctx) * 0.3)  # away from the init, as after training
        for prompt in model.compound_prompts_text:
            prompt.normal_(std=0.5)
        if isinstance(model, IVLP):
            model.visual_prompts.normal_(std=0.5)
    return model


@pytest.mark.parametrize(
    ("cls", "depth", "kwargs"),
    [(MaPLe, 1, {}), (MaPLe, 2, {}), (IVLP, 2, {}), (IVLP, 2, {"n_ctx_vision": 3})],
    ids=["maple-depth1", "maple-depth2", "ivlp-depth2", "ivlp-3-image-tokens"],
)
def test_features_and_logits_match_the_reference(cls, depth, kwargs):
    model = maple(depth, cls, **kwargs)
    plain = plain_copy(model)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        text, image = model.class_features(), model.encode_images(images)  # text: "[SOS][ctx] of a" encoded once
        expected_text, expected_image = reference_text(model, plain), reference_image(model, plain, images)
        assert (text - expected_text).abs().max() < 1e-5
        assert (image - expected_image).abs().max() < 1e-5
        expected = model.backbone.logit_scale * expected_image @ expected_text.T
        assert (model(images) - expected).abs().max() < 1e-4


@pytest.mark.parametrize("cls", [MaPLe, IVLP])
def test_gradients_reach_every_prompt_and_projection_and_nothing_else(cls):
    model = maple(2, cls).train()
    images = torch.randn(4, 3, 32, 32)
    loss = model.training_losses(model.encode_images(images), torch.tensor([0, 1, 2, 3]))["loss"]
    loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith("backbone.") for name in with_grad)


def test_at_depth_one_the_text_side_starts_as_the_hand_written_prompt():
    """The reference's sanity check: the context starts at "a photo" and "of a" stays in the prompt."""
    torch.manual_seed(0)
    model = MaPLe(class_names=CLASSES, backbone="clip-tiny", pretrained=None, prompt_depth=1)
    prompts = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]
    with torch.no_grad():
        assert (model.class_features() - model.backbone.encode_text(prompts)).abs().max() < 1e-5


def test_a_resnet_image_encoder_is_refused_in_one_sentence():
    with pytest.raises(BackboneError, match="has no ViT image encoder; use a ViT"):
        MaPLe(class_names=CLASSES, backbone="clip-tiny-rn", pretrained=None)


def test_a_depth_beyond_the_towers_is_refused():
    with pytest.raises(BackboneError, match="Prompt depth 5 must be between 1 and the tower's 2 blocks"):
        MaPLe(class_names=CLASSES, backbone="clip-tiny", pretrained=None, prompt_depth=5)


@pytest.mark.slow
def test_vit_b16_has_the_reference_parameter_count():
    model = MaPLe(class_names=CLASSES, backbone="ViT-B-16", pretrained=None)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3_555_072
    ivlp = IVLP(class_names=CLASSES, backbone="ViT-B-16", pretrained=None)  # 12 x 2 tokens in each tower
    assert sum(p.numel() for p in ivlp.parameters() if p.requires_grad) == 12 * 2 * 512 + 12 * 2 * 768
