"""CLIP-LoRA against a transcription (in our own code) of MaxZanella/CLIP-LoRA ``loralib/layers.py``:
each adapted attention is ``PlainMultiheadAttentionLoRA``, explicit q, k, v and out projections
``W x + b + alpha / sqrt(r) * dropout(x) A^T B^T``, softmax attention, and the towers are open_clip's own
encoders around it. Also the reference's sanity checks: B = 0 is CLIP, merged equals unmerged, and
ViT-B/16's 184,320 trainable parameters."""

import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from promptlab.backbone import BackboneError, FrozenCLIP, LoRASpec
from promptlab.backbone.lora import install_lora
from promptlab.methods import CLIPLoRA

CLASSES = ["dog", "golden_retriever", "st. bernard", "red square"]


class ReferenceLoRAAttention(nn.Module):
    """Our transcription of the reference's adapted attention (``layers.py:425-517``), dropout off."""

    def __init__(self, attn: nn.MultiheadAttention, lora: nn.Module, projections, scaling: float) -> None:
        super().__init__()
        self.heads, width = attn.num_heads, attn.embed_dim
        w, b = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()
        self.linear = {
            "q": (w[:width], b[:width]),
            "k": (w[width : 2 * width], b[width : 2 * width]),
            "v": (w[2 * width :], b[2 * width :]),
            "o": (attn.out_proj.weight.detach(), attn.out_proj.bias.detach()),
        }
        self.lora = {p: (getattr(lora, f"{p}_A").detach(), getattr(lora, f"{p}_B").detach()) for p in projections}
        self.scaling = scaling

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.linear[name]
        y = x @ weight.T + bias
        if name in self.lora:
            a, b = self.lora[name]
            y = y + self.scaling * (x @ a.T @ b.T)
        return y

    def forward(self, query, key, value, need_weights=False, attn_mask=None):
        batch, length, width = query.shape
        d = width // self.heads

        def heads(t):
            return t.view(batch, -1, self.heads, d).transpose(1, 2)

        q, k, v = heads(self.project("q", query)), heads(self.project("k", key)), heads(self.project("v", value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if attn_mask is not None:
            scores = scores + attn_mask
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
        return self.project("o", out), None


def reference_model(model: CLIPLoRA) -> nn.Module:
    """A copy of the plain open_clip model with the reference's attention in every adapted block."""
    plain = FrozenCLIP("clip-tiny", None).model
    plain.load_state_dict({k: v for k, v in model.backbone.model.state_dict().items() if ".lora." not in k})
    spec = model.spec
    for tower in spec.towers:
        ours = model.backbone.model.visual if tower == "image" else model.backbone.model
        theirs = plain.visual if tower == "image" else plain
        for index, block in enumerate(theirs.transformer.resblocks):
            if spec.blocks is None or index in spec.blocks:
                lora = ours.transformer.resblocks[index].attn.lora
                block.attn = ReferenceLoRAAttention(block.attn, lora, spec.projections, spec.scaling)
    return plain.eval()


def adapted(**kwargs) -> CLIPLoRA:
    torch.manual_seed(0)
    model = CLIPLoRA(class_names=CLASSES, backbone="clip-tiny", pretrained=None, **kwargs).eval()
    with torch.no_grad():
        for parameter in model.lora_parameters:
            parameter.normal_(std=0.3)  # B away from 0, as after training
    return model


def reference_features(model: CLIPLoRA, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    reference = reference_model(model)
    tokens = open_clip.get_tokenizer("clip-tiny")([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    with torch.no_grad():
        return (
            F.normalize(reference.encode_image(images), dim=-1),
            F.normalize(reference.encode_text(tokens), dim=-1),
        )


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"projections": ["q", "k", "v", "o"], "rank": 4, "alpha": 2.0},
        {"towers": ["image"], "blocks": [1]},
        {"towers": ["text"], "blocks": [0]},
    ],
    ids=["reference-defaults", "qkvo-rank4", "image-block1", "text-block0"],
)
def test_features_and_logits_match_the_reference(settings):
    model = adapted(**settings)
    images = torch.randn(3, 3, 32, 32)
    expected_image, expected_text = reference_features(model, images)
    with torch.no_grad():
        image = model.encode_images(images)
        text = model.class_features()  # the prompts' shared prefix encoded once: exact for a causal tower
        logits = model(images)
    assert (image - expected_image).abs().max() < 1e-5
    assert (text - expected_text).abs().max() < 1e-5
    expected_logits = model.backbone.logit_scale * expected_image @ expected_text.T
    assert (logits - expected_logits).abs().max() < 1e-4


def test_at_init_the_model_is_clip():
    torch.manual_seed(0)
    model = CLIPLoRA(class_names=CLASSES, backbone="clip-tiny", pretrained=None)
    plain = FrozenCLIP("clip-tiny", None)
    plain.load_state_dict({k: v for k, v in model.backbone.state_dict().items() if ".lora." not in k})
    images = torch.randn(3, 3, 32, 32)
    prompts = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]
    model.train()  # dropout active: the branch is 0 all the same
    with torch.no_grad():
        assert (model.encode_images(images) - plain.encode_image(images)).abs().max() < 1e-6
        assert (model.class_features() - plain.encode_text(prompts)).abs().max() < 1e-6
    assert all(not p.any() for name, p in model.named_parameters() if name.endswith("_B"))


def test_merged_evaluation_equals_the_unmerged_branch():
    model = adapted(lora_dropout=0.0, projections=["q", "k", "v", "o"])
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        merged = model.eval()(images)
        for module in model.backbone.modules():  # the explicit low-rank branch, as in training
            if hasattr(module, "dropout") and hasattr(module, "delta"):
                module.dropout.p = 1e-12
        unmerged = model.train()(images)
    assert (merged - unmerged).abs().max() < 1e-4


def test_dropout_acts_on_the_branch_in_training_only():
    model = adapted()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first, second = model.eval()(images), model(images)
        model.train()
        noisy = model(images)
    assert torch.equal(first, second)
    assert not torch.allclose(noisy, first, atol=1e-4)
    assert not model.backbone.model.visual.transformer.resblocks[0].training  # CLIP's own modules stay in eval


def test_gradients_reach_only_the_adapters():
    torch.manual_seed(0)
    model = CLIPLoRA(class_names=CLASSES, backbone="clip-tiny", pretrained=None).train()
    images = torch.randn(4, 3, 32, 32)
    loss = model.training_losses(model.encode_images(images), torch.tensor([0, 1, 2, 3]))["loss"]
    loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, p in model.named_parameters() if ".lora." in name}
    b_grads = [p.grad.abs().sum() for name, p in model.named_parameters() if name.endswith("_B")]
    a_grads = [p.grad.abs().sum() for name, p in model.named_parameters() if name.endswith("_A")]
    assert all(g > 0 for g in b_grads) and all(g == 0 for g in a_grads)  # B = 0: A learns from the second step


def test_scaling_is_alpha_over_sqrt_rank():
    assert LoRASpec(rank=2, alpha=1.0).scaling == pytest.approx(1 / math.sqrt(2))
    assert LoRASpec(rank=16, alpha=32.0).scaling == pytest.approx(8.0)


def test_vit_b16_has_the_reference_parameter_count():
    with torch.device("meta"):  # the architecture without allocating its weights
        model = open_clip.create_model("ViT-B-16", device="meta")
    parameters = install_lora(model, LoRASpec())
    assert sum(p.numel() for p in parameters) == 184_320


def test_decision_the_logit_scale_is_the_backbones():
    """The reference hard-codes 100, OpenAI CLIP's own; another CLIP keeps its scale."""
    model = adapted()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.encode_images(images), model.class_features()
        assert torch.allclose(model(images), model.backbone.logit_scale * features[0] @ features[1].T)
    assert float(model.export_head().scale) == pytest.approx(float(model.backbone.logit_scale))
    fixed = adapted(logit_scale=100.0)  # the reference's constant, when asked for
    assert float(fixed.export_head().scale) == 100.0


def test_a_resnet_image_encoder_is_refused_in_one_sentence():
    with pytest.raises(BackboneError, match=r"image encoder is a ModifiedResNet.*use a ViT"):
        CLIPLoRA(class_names=CLASSES, backbone="clip-tiny-rn", pretrained=None)
    text_only = CLIPLoRA(class_names=CLASSES, backbone="clip-tiny-rn", pretrained=None, towers=["text"])
    assert text_only.caches_image_features  # the image tower is untouched: its features can be cached


def test_a_block_outside_the_tower_is_refused():
    with pytest.raises(BackboneError, match="block 5 is outside the image encoder's 2 blocks"):
        CLIPLoRA(class_names=CLASSES, backbone="clip-tiny", pretrained=None, towers=["image"], blocks=[5])


def test_other_classes_reuse_the_adapted_text_tower():
    model = adapted()
    changed = model.with_classes([*CLASSES, "purple star"]).eval()
    with torch.no_grad():
        assert torch.allclose(changed.class_features()[:4], model.class_features(), atol=1e-6)
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name.endswith("_B"):
                parameter.zero_()
        assert not torch.allclose(plain.class_features(), model.class_features(), atol=1e-3)
