"""The frozen backbone: exact truncated text encoding, freezing, loading and its errors."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from promptlab.backbone import BackboneError, FrozenCLIP, _TextTower, file_sha256

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

    tower = _TextTower(FakeCustomTextCLIP(), "clip-tiny")
    with pytest.raises(BackboneError, match="Hugging Face text model"):
        tower.require_prompt_learning()
