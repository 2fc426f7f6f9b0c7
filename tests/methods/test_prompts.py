"""CoOp prompts: exactness against open_clip, token layouts, gradients and errors."""

import json

import open_clip
import pytest
import torch

from promptlab.backbone import BackboneError
from promptlab.methods import CoOp
from promptlab.methods._prompts import build_prompt_layout, coop_segments
from tests.backbone.test_own_clip import OWN_CFG, OWN_PREPROCESS, save_state

CLASSES = ["dog", "golden_retriever", "st. bernard", "cat"]


def coop(**kwargs) -> CoOp:
    return CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, **kwargs)


def test_init_phrase_equals_open_clip_encode_text():
    model = coop(ctx_init="a photo of a")
    texts = [f"a photo of a {name.replace('_', ' ')}." for name in CLASSES]
    reference = model.backbone.model.encode_text(model.backbone.tokenize(texts), normalize=True)
    assert model.n_ctx == 4
    assert (model.class_features() - reference).abs().max() <= 1e-5


def test_class_specific_init_phrase_also_exact():
    model = coop(ctx_init="a photo of a", class_specific=True)
    texts = [f"a photo of a {name.replace('_', ' ')}." for name in CLASSES]
    reference = model.backbone.model.encode_text(model.backbone.tokenize(texts), normalize=True)
    assert model.ctx.shape == (len(CLASSES), 4, model.backbone.text_width)
    assert (model.class_features() - reference).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("position", "template"),
    [("end", "X X X X {}."), ("middle", "X X {} X X."), ("front", "{} X X X X.")],
)
def test_positions_build_expected_token_sequences(tiny_backbone, position, template):
    layout = build_prompt_layout(tiny_backbone, ["golden retriever"], coop_segments(4, position))
    expected = tiny_backbone.tokenize([template.format("golden retriever")])[0, : layout.token_ids.shape[1]]
    assert torch.equal(layout.token_ids[0], expected)
    placeholder = tiny_backbone.word_ids("X")[0]
    assert (layout.token_ids[0, layout.context_slots[0]] == placeholder).all()
    assert layout.pool_index[0] == int(expected.argmax())


@pytest.mark.parametrize("position", ["middle", "front"])
def test_other_positions_place_context_vectors(position):
    model = coop(n_ctx=4, class_position=position)
    embeddings = model.prompt_embeddings()
    slots = model.context_slots[1]
    assert torch.equal(embeddings[1, slots], model.ctx.detach())


def test_random_init_statistics():
    torch.manual_seed(0)
    model = coop(n_ctx=16)
    assert model.ctx.shape == (16, model.backbone.text_width)
    assert abs(model.ctx.std().item() - 0.02) < 0.003


def test_only_context_receives_gradients():
    model = coop(n_ctx=4)
    images = torch.randn(2, 3, 32, 32)
    loss = torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1]))
    loss.backward()
    assert model.ctx.grad is not None and model.ctx.grad.abs().sum() > 0
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["ctx"]
    assert all(p.grad is None for p in model.backbone.parameters())


def test_class_name_too_long_names_class_and_token_count():
    long_name = " ".join(["supercalifragilistic"] * 40)
    with pytest.raises(
        BackboneError, match=r"class 'supercalifragilistic .*' needs \d+ tokens .*; shorten the class name"
    ):
        CoOp(class_names=["dog", long_name], backbone="clip-tiny", pretrained=None, n_ctx=16)


def test_n_ctx_too_long_says_the_most_the_text_encoder_takes(tmp_path):
    cfg = {**OWN_CFG, "text_cfg": {**OWN_CFG["text_cfg"], "context_length": 16}}  # a 16-token text encoder
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": OWN_PREPROCESS}))
    save_state(open_clip.model.CLIP(**cfg), tmp_path / "open_clip_model.safetensors")
    # [SOT] + 16 context + "dog" + "." + [EOT] = 20 tokens: 12 context tokens leave room for the rest
    with pytest.raises(
        BackboneError, match=r"needs 20 tokens with n_ctx=16, but .* at most 16; set n_ctx to 12 or less"
    ):
        CoOp(class_names=["dog", "cat"], backbone=f"local-dir:{tmp_path}", n_ctx=16)
    assert CoOp(class_names=["dog", "cat"], backbone=f"local-dir:{tmp_path}", n_ctx=12).ctx.shape[-2] == 12


def test_duplicate_class_names_rejected():
    with pytest.raises(ValueError, match="duplicate class names 'golden_retriever' and 'Golden Retriever'"):
        CoOp(class_names=["golden_retriever", "Golden Retriever"], backbone="clip-tiny", pretrained=None)


def test_coop_encodes_its_shared_context_once_with_the_same_features():
    from promptlab.methods.coop import CoOp

    model = CoOp(class_names=["golden_retriever", "golden_eagle"], backbone="clip-tiny", pretrained=None, n_ctx=4)
    assert model.shared_prefix == 1 + 4 + 1  # [SOT] ctx x 4 "golden"
    names = ["golden_retriever", "golden_eagle", "tabby_cat"]
    model = CoOp(class_names=names, backbone="clip-tiny", pretrained=None, n_ctx=4)
    assert model.shared_prefix == 1 + 4
    shared = model.class_features()
    model.shared_prefix = 0
    assert torch.allclose(shared, model.class_features(), atol=1e-5)
    assert CoOp(class_names=names, backbone="clip-tiny", pretrained=None, class_specific=True).shared_prefix == 0


def test_text_checkpointing_gives_the_same_features_and_gradients():
    from promptlab.methods.coop import CoOp

    names = ["golden_retriever", "tabby_cat", "red_fox"]
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = CoOp(class_names=names, backbone="clip-tiny", pretrained=None, text_checkpointing=checkpointing)
        features = model.class_features()  # shared-prefix path
        features[:, :4].sum().backward()
        results.append((features.detach(), model.ctx.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert results[0][1].abs().sum() > 0 and torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_class_specific_checkpoint_refuses_other_classes():
    trained = {"hyper_parameters": {"class_names": CLASSES}}
    other = {"hyper_parameters": {"class_names": ["cow", "horse", "sheep", "goat"]}}
    coop(class_specific=True).on_load_checkpoint(trained)
    with pytest.raises(ValueError, match=r"class-specific contexts for 4 classes .*class_specific false"):
        coop(class_specific=True).on_load_checkpoint(other)
    coop().on_load_checkpoint(other)  # a shared context applies to any classes (base-to-new)
