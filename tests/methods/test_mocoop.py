"""MoCoOp: exact initialisation, routing, gradients only where they belong, losses, export, CLI."""

import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.methods import MoCoOp

CLASSES = ["blue_triangle", "green_circle", "red_square"]
GROUPS = [
    ["a photo of a {}."],
    ["a photo of a {}, a type of flower.", "a photo of a {}, a type of shape."],
    ["{} texture."],
    ["a low resolution photo of the {}.", "a pixelated photo of a {}."],
]


def mocoop(**kwargs) -> MoCoOp:
    torch.manual_seed(0)
    args = {"class_names": CLASSES, "backbone": "clip-tiny", "pretrained": None, "template_groups": GROUPS}
    return MoCoOp(**(args | kwargs))


def test_prototypes_are_group_means_of_normalised_template_features_with_their_periods():
    model = mocoop()
    names = model.prompt_class_names
    with torch.no_grad():
        second = model.backbone.encode_text([GROUPS[1][1].format(n) for n in names])
        first = model.backbone.encode_text([GROUPS[1][0].format(n) for n in names])
        assert torch.allclose(model.prototypes[1], F.normalize(first + second, dim=-1), atol=1e-6)


def test_router_forced_to_one_expert_gives_that_experts_clip_logits():
    model = mocoop(top_k=1)
    with torch.no_grad():
        model.contexts[0].normal_(std=0.1)  # a "trained" context
        model.router.weight.zero_()
        model.router.bias.copy_(torch.tensor([5.0, 0, 0, 0]))
        images = torch.randn(5, 3, 32, 32)
        expected = model.backbone.logit_scale * model.backbone.encode_image(images) @ model.expert_features(0).T
        assert torch.allclose(model(images), expected, atol=1e-5)


def test_mixture_is_the_softmax_weighted_sum_of_the_top_k_experts():
    model = mocoop(top_k=2)
    with torch.no_grad():
        images = torch.randn(4, 3, 32, 32)
        features = model.backbone.encode_image(images)
        gate = model.router(features)
        top = gate.topk(2, dim=-1)
        weights = top.values.softmax(-1)
        experts = model.class_features()
        expected = torch.stack(
            [
                model.backbone.logit_scale
                * features[b]
                @ (weights[b, 0] * experts[top.indices[b, 0]] + weights[b, 1] * experts[top.indices[b, 1]]).T
                for b in range(4)
            ]
        )
        assert torch.allclose(model(images), expected, atol=1e-5)


def test_gradients_reach_only_prompts_router_and_correction():
    model = mocoop()
    parts = model.training_losses(
        model.backbone.encode_image(torch.randn(6, 3, 32, 32)), torch.tensor([0, 1, 2, 0, 1, 2])
    )
    (parts["cls"] + parts["gate"] + parts["text"]).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {f"contexts.{e}" for e in (0, 1, 2, 3)} | {"router.weight", "router.bias", "correction"}
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_layernorm_option_tunes_only_image_layernorms():
    model = mocoop(tune_image_layernorms=True)
    tuned = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert tuned and all(n.startswith("model.visual.transformer.") and (".ln_1." in n or ".ln_2." in n) for n in tuned)
    parts = model.training_losses(model.encode_images(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    parts["cls"].backward()
    assert all(p.grad is not None for n, p in model.backbone.named_parameters() if n in tuned)
    groups = model.trainable_parameters()
    assert groups[1]["lr"] == pytest.approx(model.hparams.lr * 0.1)


def test_losses_fall_and_backbone_stays_bit_identical():
    model = mocoop(lr=0.05, warmup_epochs=0)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    images, labels = torch.randn(12, 3, 32, 32), torch.arange(12) % 3

    class Fixed(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return images[i], labels[i], i

    def losses():
        with torch.no_grad():
            parts = model.training_losses(model.backbone.encode_image(images), labels)
        return parts["cls"], parts["cls"] + 5 * parts["text"] + parts["gate"]

    start = losses()
    trainer = L.Trainer(
        max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, torch.utils.data.DataLoader(Fixed(), batch_size=12))
    end = losses()
    # The unscaled text loss cannot fall far (cosine logits in [-1, 1]): the classification loss must.
    assert end[0] < 0.8 * start[0] and end[1] < start[1]
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


@pytest.mark.parametrize("tune_image_layernorms", [False, True])
def test_export_predicts_exactly_what_the_module_predicts(image_folder, tmp_path, tune_image_layernorms):
    model = mocoop(tune_image_layernorms=tune_image_layernorms)
    with torch.no_grad():
        for ctx in model.contexts:
            ctx.normal_(std=0.1)
        model.router.weight.normal_()
        for p in model.backbone.parameters():
            if p.requires_grad:  # "tuned" LayerNorms: the file must carry them
                p.add_(torch.randn_like(p) * 0.1)
    path = export_classifier(model, tmp_path / "mocoop.safetensors")
    classifier = Classifier.load(path, device="cpu")
    images = sorted(image_folder.rglob("*.png"))[:9]
    batch = classifier._batches(images, len(images))[0]
    model.eval()
    with torch.no_grad():
        expected = model(batch).softmax(-1)
    assert classifier.head.experts.shape == (4, 3, model.backbone.embed_dim)
    assert torch.allclose(classifier.predict_proba(images), expected, atol=1e-5)
    assert [p.label for p in classifier.predict(images)] == [CLASSES[i] for i in expected.argmax(-1)]


def test_cli_fit_test_export_classify_with_routing_report(image_folder, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["fit", "-c", "configs/tiny/mocoop.yaml", f"--data.root={image_folder}"]
    assert main([*args, f"--trainer.logger.init_args.save_dir={out}", "--trainer.max_epochs=2"]) == 0
    (run,) = (p.parent for p in out.rglob("routing.json"))
    routing = json.loads((run / "routing.json").read_text())
    assert len(routing["experts"]) == 4 and abs(sum(routing["overall"]) - 1) < 1e-3
    assert set(routing["per_class"]) == set(CLASSES) and (run / "routing.png").is_file()
    assert main(["export", "--run", str(run)]) == 0
    assert (
        main(["classify", "--classifier", str(run / "classifier.safetensors"), str(image_folder / "red_square")]) == 0
    )
    assert "red_square" in capsys.readouterr().out
