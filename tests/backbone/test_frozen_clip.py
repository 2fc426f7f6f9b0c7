"""The frozen backbone: exact truncated text encoding, freezing, loading and its errors."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from promptlab.backbone import BackboneError, FrozenCLIP, file_sha256
from promptlab.backbone.text_tower import TextTower

PROMPTS = ["a photo of a dog.", "a photo of a golden retriever, a type of pet.", "x", "itap of a very small red car."]


@pytest.mark.parametrize("model_name", ["clip-tiny", "clip-tiny-rn"])
def test_truncated_encoding_equals_open_clip(model_name):
    backbone = FrozenCLIP(model_name, pretrained=None)
    ids = backbone.tokenize(PROMPTS)
    reference = backbone.model.encode_text(ids, normalize=True)
    assert backbone.prompt_length(ids) == int(ids.argmax(-1).max()) + 1 < backbone.context_length
    assert torch.allclose(backbone.encode_token_ids(ids), reference, atol=1e-6)
    assert torch.allclose(backbone.encode_text(PROMPTS, batch_size=3), reference, atol=1e-6)


def test_full_length_prompt_encoding_equals_truncated(tiny_backbone):
    ids = tiny_backbone.tokenize(PROMPTS)
    full = tiny_backbone.encode_prompts(tiny_backbone.embed_tokens(ids), tiny_backbone.pool_index(ids))
    short_ids = ids[:, : tiny_backbone.prompt_length(ids)]
    short = tiny_backbone.encode_prompts(tiny_backbone.embed_tokens(short_ids), tiny_backbone.pool_index(short_ids))
    assert short_ids.shape[1] < ids.shape[1]
    assert torch.allclose(full, short, atol=1e-6)


def test_no_truncation_without_causal_mask(monkeypatch):
    backbone = FrozenCLIP("clip-tiny", pretrained=None)
    ids = backbone.tokenize(PROMPTS)
    backbone.model.attn_mask = torch.zeros_like(backbone.model.attn_mask)  # bidirectional
    assert backbone.prompt_length(ids) == backbone.context_length


def test_backbone_is_frozen_and_stays_in_eval(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not any(m.training for m in tiny_backbone.modules())


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(BackboneError, match=r"Unknown backbone 'ViT-B-61'.*'ViT-B-16'"):
        FrozenCLIP("ViT-B-61")


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(BackboneError, match=r"no pretrained tag 'opena'.*openai"):
        FrozenCLIP("ViT-B-16", pretrained="opena")


def test_offline_download_names_the_file_and_weights_path():
    with pytest.raises(
        BackboneError, match=r"Cannot download weights for 'ViT-B-32' pretrained='openai'.*weights_path"
    ):
        FrozenCLIP("ViT-B-32", pretrained="openai")


def test_missing_weights_file():
    with pytest.raises(BackboneError, match="does not exist"):
        FrozenCLIP("clip-tiny", pretrained=None, weights_path="/nowhere/weights.safetensors")


def test_local_weights_file_loads_exactly(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, str(path))
    loaded = FrozenCLIP("clip-tiny", pretrained=None, weights_path=str(path))
    ids = tiny_backbone.tokenize(PROMPTS)
    assert torch.equal(loaded.encode_token_ids(ids), tiny_backbone.encode_token_ids(ids))
    assert loaded.weights_sha256() == file_sha256(path)


def test_hugging_face_text_tower_is_refused():
    class FakeCustomTextCLIP(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = nn.Linear(2, 2)  # stands in for open_clip's HFTextEncoder

    tower = TextTower(FakeCustomTextCLIP(), "clip-tiny")
    with pytest.raises(BackboneError, match="Hugging Face text model"):
        tower.require_prompt_learning()


@pytest.mark.parametrize("prefix", [1, 3, 5])
def test_shared_prefix_encoding_equals_open_clip(tiny_backbone, prefix):
    prompts = ["a photo of a dog.", "a photo of a golden retriever, a type of pet.", "a photo of a very small red car."]
    ids = tiny_backbone.tokenize(prompts)
    assert (ids[:, :5] == ids[:1, :5]).all()  # [SOT] a photo of a
    reference = tiny_backbone.model.encode_text(ids, normalize=True)
    ids = ids[:, : tiny_backbone.prompt_length(ids)]
    embeddings, pool = tiny_backbone.embed_tokens(ids), tiny_backbone.pool_index(ids)
    shared = tiny_backbone.encode_prompts(embeddings, pool, shared_prefix=prefix, chunk_size=2)
    assert torch.allclose(shared, reference, atol=1e-5)


def test_shared_prefix_gradients_equal_the_full_encoding(tiny_backbone):
    ids = tiny_backbone.tokenize(["a photo of a dog.", "a photo of a cat on a mat."])
    ids = ids[:, : tiny_backbone.prompt_length(ids)]
    pool = tiny_backbone.pool_index(ids)
    grads = []
    for prefix in (0, 5):
        ctx = tiny_backbone.embed_tokens(ids[0, 1:5]).clone().requires_grad_(True)  # learnable "a photo of a"
        embeddings = tiny_backbone.embed_tokens(ids).index_put((torch.tensor([[0], [1]]), torch.arange(1, 5)), ctx)
        tiny_backbone.encode_prompts(embeddings, pool, shared_prefix=prefix)[:, :3].sum().backward()
        grads.append(ctx.grad)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_text_checkpointing_keeps_features_and_gradients():
    backbone = FrozenCLIP("clip-tiny", pretrained=None)
    ids = backbone.tokenize(PROMPTS)
    reference = backbone.model.encode_text(ids, normalize=True)
    ids = ids[:, : backbone.prompt_length(ids)]
    backbone.set_text_checkpointing(True)
    embeddings = backbone.embed_tokens(ids).requires_grad_(True)
    features = backbone.encode_prompts(embeddings, backbone.pool_index(ids))
    features.sum().backward()
    assert torch.allclose(features, reference, atol=1e-6)
    assert embeddings.grad.abs().sum() > 0
