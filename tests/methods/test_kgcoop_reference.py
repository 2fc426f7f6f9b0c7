"""KgCoOp against a transcription (in our own code) of htyao89/KgCoOp ``trainers/kgcoop.py``: CoOp's
prompts with the context hard-coded to "a photo of a", class features from the learned prompts, the
hand-written template's features from the frozen CLIP, and ``CE + w * (1 - mean_c cos)``."""

import pytest
import torch
import torch.nn.functional as F

from promptlab.methods import KgCoOp
from tests.methods.test_coop_reference import reference_prompts

CLASSES = ["dog", "golden_retriever", "st. bernard", "red square"]
PETS = "a photo of a {}, a type of pet."  # CoOp's (and KgCoOp's CUSTOM_TEMPLATES) Oxford Pets template


def reference_loss(model: KgCoOp, image_features, labels, template: str, weight: float = 8.0):
    """The reference's forward and loss: (loss, CE, the knowledge-guided term)."""
    backbone = model.backbone
    prompts, eot, _ = reference_prompts(backbone, CLASSES, None, 0, "end", ctx_init="a photo of a")
    prompts = prompts.clone()
    prompts[:, 1:5] = model.ctx  # the learned context, in the reference's [SOS][ctx][name.][EOS] layout
    text = backbone.encode_prompts(prompts, eot, normalize=False, truncate=False)  # all 77 tokens, as the reference
    text = text / text.norm(dim=-1, keepdim=True)
    names = [name.replace("_", " ") for name in CLASSES]
    clip = backbone.encode_token_ids(backbone.tokenize([template.format(n) for n in names]), normalize=False)
    clip = clip / clip.norm(dim=-1, keepdim=True)
    logits = backbone.logit_scale * image_features @ text.t()
    ce = F.cross_entropy(logits, labels)
    kg = 1.0 - torch.mean(torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text, clip))
    return ce + weight * kg, ce, kg


def kgcoop(template: str = "a photo of a {}.") -> KgCoOp:
    torch.manual_seed(0)
    model = KgCoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, dataset_template=template)
    with torch.no_grad():
        model.ctx.add_(torch.randn_like(model.ctx) * 0.3)  # moved away from "a photo of a", as after training
    return model


@pytest.mark.parametrize("template", ["a photo of a {}.", PETS])
def test_loss_and_its_parts_match_the_reference(template):
    model = kgcoop(template)
    torch.manual_seed(1)
    images = F.normalize(torch.randn(6, model.backbone.embed_dim), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    ours = model.training_losses(images, labels)
    loss, ce, kg = reference_loss(model, images, labels, template)
    assert kg > 1e-3  # the context moved: the penalty is not trivially 0
    for name, expected in (("loss", loss), ("ce", ce), ("kg", kg)):
        assert (ours[name] - expected).abs() < 1e-5, name
    ours["loss"].backward()
    (ctx_grad,) = [p.grad for name, p in model.named_parameters() if name == "ctx"]
    assert ctx_grad.abs().sum() > 0  # gradients reach the context, and nothing else
    assert [name for name, p in model.named_parameters() if p.grad is not None] == ["ctx"]


def test_the_penalty_is_zero_at_init_when_the_template_is_the_init_phrase():
    """The reference's own sanity check: context "a photo of a" and template "a photo of a {}."."""
    model = KgCoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None)
    images = F.normalize(torch.randn(2, model.backbone.embed_dim), dim=-1)
    assert model.training_losses(images, torch.tensor([0, 1]))["kg"].abs() < 1e-6
    assert model.n_ctx == 4 and model.ctx.dim() == 2  # 4 shared vectors, as the reference


def test_decision_the_init_phrase_is_honoured():
    """The reference starts from "a photo of a" whatever CTX_INIT says; ours uses the phrase given."""
    model = KgCoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, ctx_init="itap of a")
    expected = model.backbone.embed_tokens(torch.tensor(model.backbone.word_ids("itap of a")))
    assert model.n_ctx == 4 and torch.equal(model.ctx.detach(), expected.float())


def test_the_weight_scales_only_the_penalty():
    model = kgcoop(PETS)
    images = F.normalize(torch.randn(3, model.backbone.embed_dim), dim=-1)
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        eight = model.training_losses(images, labels)
        model.hparams.kg_weight = 0.0
        none = model.training_losses(images, labels)
    assert torch.isclose(none["loss"], none["ce"]) and torch.isclose(eight["loss"], eight["ce"] + 8 * eight["kg"])
