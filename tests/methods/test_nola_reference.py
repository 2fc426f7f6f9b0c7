"""NoLA against a transcription (in our own code) of the reference's stage 3 and stage 2 (fazliimam/NoLA,
``trainers/NoLA.py`` and ``utils/``), on random weights. Each test pins one
step; the one deliberate difference (the pseudo-label fallback) is in docs/methods/nola.md.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import yaml
from PIL import Image

from promptlab.backbone import PreprocessConfig
from promptlab.configs import shipped_config
from promptlab.data.catalog import IMAGENET_VARIANTS
from promptlab.data.unlabelled import RandomBlur, strong_transform
from promptlab.methods import NoLA

CLASSES = ["blue_triangle", "green_circle", "red_square"]
CONFIGS = Path(__file__).parents[2] / "promptlab" / "configs"


def nola(**kwargs) -> NoLA:
    torch.manual_seed(0)
    args = {"class_names": CLASSES, "backbone": "clip-tiny", "pretrained": None, "dino": "toy-dino"}
    return NoLA(**(args | kwargs))


def reference_label_smoothing_ce(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """The reference's LabelSmoothingCrossEntropy: eps * mean(-sum log p) / C + (1 - eps) * NLL."""
    log_p = F.log_softmax(logits, dim=-1)
    smooth = (-log_p.sum(dim=-1)).mean() / logits.shape[-1]
    return epsilon * smooth + (1 - epsilon) * F.nll_loss(log_p, target)


def test_stage3_logits_and_loss_are_the_references_raw_head_on_the_unnormalised_feature():
    """Reference: ``cde_adapter(img_features_2)``, a bias-free Linear on CLIP's image embedding as the
    tower outputs it: no normalisation, no logit scale."""
    model = nola(n_prompts=4).train()
    with torch.no_grad():
        model.visual_prompts.normal_()
        model.head.weight.add_(torch.randn_like(model.head.weight) * 0.1)
    images, targets = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    features = model.encode_images(images)
    raw = model.backbone.model.encode_image(images)  # the tower's output, prompts included
    assert torch.allclose(features, raw, atol=1e-6) and not torch.allclose(features.norm(dim=-1), torch.ones(6))
    parts = model.training_losses(features, targets)
    assert torch.allclose(parts["logits"], raw @ model.head.weight.T, atol=1e-6)
    assert torch.allclose(parts["loss"], reference_label_smoothing_ce(raw @ model.head.weight.T, targets), atol=1e-6)


def test_learning_rate_is_constant_as_the_references_multisteplr_without_milestones():
    model = nola()
    scheduler = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    reference_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.004)
    reference = torch.optim.lr_scheduler.MultiStepLR(reference_optimizer, [], 0.2)  # None: no milestones
    for _ in range(5):
        assert [g["lr"] for g in scheduler.optimizer.param_groups] == pytest.approx([0.004, 0.004])
        assert reference_optimizer.param_groups[0]["lr"] == pytest.approx(0.004)
        scheduler.optimizer.step(), reference_optimizer.step()
        scheduler.step(), reference.step()


def test_biases_get_no_weight_decay_by_the_references_rule():
    """Reference: no decay for parameters whose name contains 'bias' (its 'LayerNorm.weight' pattern
    never matches CLIP's names, so LayerNorm weights, prompts and head decay at 0.01)."""
    model = nola(n_prompts=4)
    optimizer = model.configure_optimizers()["optimizer"]
    named = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {named[id(p)] for p in no_decay["params"]} == {n for n in named.values() if "bias" in n}
    assert {"visual_prompts", "head.weight", "backbone.model.visual.ln_post.weight"} <= {
        named[id(p)] for p in decay["params"]
    }
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_visual_prompts_start_uniform_within_the_references_xavier_bound():
    model = nola(n_prompts=2000)
    width = model.visual_prompts.shape[1]
    bound = math.sqrt(6.0 / (3 * 16 * 16 + width))
    assert math.sqrt(6.0 / (3 * 16 * 16 + 768)) == 0.0625  # ViT-B: the reference's value
    values = model.visual_prompts.detach()
    assert values.abs().max() <= bound and values.abs().max() > 0.95 * bound
    assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform, not normal


def test_dino_sees_clips_test_view_and_the_labeller_trains_in_batches_of_32(monkeypatch, image_folder):
    import promptlab.methods.nola as nola_module
    from promptlab.data import FewShotDataModule
    from promptlab.data.transforms import test_transform

    seen: list[torch.Tensor] = []

    class RecordingDino(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.append(images)
            return images.flatten(1)[:, :8]

    steps: list[int] = []
    original_step = torch.optim.Adam.step
    monkeypatch.setattr(nola_module, "load_dino", lambda name: RecordingDino())
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or original_step(self, *a, **k))
    model = nola(n_prompts=0, labeller_epochs=1, min_per_class=8)
    data = FewShotDataModule(root=str(image_folder), label_free=True, num_workers=0, test_batch_size=64)
    data.setup("fit")
    model.connect_data(data)
    labels = model._stage2(data, None)
    root, samples = data.unlabelled_pool
    view = test_transform(model.preprocess)
    expected = torch.stack([view(Image.open(root / s.path).convert("RGB")) for s in samples])
    pool_views = torch.cat(seen[: math.ceil(len(samples) / 64)])
    assert torch.allclose(pool_views, expected, atol=1e-6)  # CLIP's resize, crop and normalisation
    picked = int(model.stage_report["pseudo_labels_stage1"])
    assert len(steps) == math.ceil(picked / 32) and len(labels) == len(samples)


def test_strong_view_has_the_references_augmentations():
    cfg = PreprocessConfig(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
    steps = strong_transform(cfg).transforms
    kinds = [type(t) for t in steps]
    assert kinds == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.RandomApply,
        T.RandomPerspective,
        T.ColorJitter,
        RandomBlur,
        T.ToTensor,
        T.Normalize,
    ]
    assert steps[0].scale == (0.2, 1.0) and steps[2].p == 0.8
    assert steps[3].distortion_scale == 0.2 and steps[3].p == 0.5
    jitter = steps[4]
    assert jitter.brightness == (0.6, 1.4) and jitter.hue == (-0.1, 0.1)  # always on, not in a RandomApply
    assert (steps[5].low, steps[5].high) == (0.1, 2.0)  # radius in pixels at 224; scaled for smaller views
    assert RandomBlur(32).high == pytest.approx(2.0 * 32 / 224)


# The 11 training datasets; the ImageNet variants are test sets (ImageNet's templates serve them).
TRAINING_DATASETS = sorted(p.stem for p in (CONFIGS / "datasets").glob("*.yaml") if p.stem not in IMAGENET_VARIANTS)


@pytest.mark.parametrize("dataset", TRAINING_DATASETS)
def test_every_dataset_has_nola_templates_and_they_make_the_references_description_classifier(dataset, tmp_path):
    """Reference ``gen_emb``: per class, the normalised mean of the normalised features of its descriptions
    and its dataset's templates."""
    path = shipped_config(f"nola/templates/{dataset}.yaml")
    assert path is not None, f"configs/nola/templates/{dataset}.yaml is missing"
    templates = yaml.safe_load(path.read_text())["model"]["init_args"]["templates"]
    descriptions = {name: [f"a {name} with {k} features." for k in range(3)] for name in CLASSES}
    (tmp_path / "d.json").write_text(__import__("json").dumps(descriptions))
    model = nola(n_prompts=0, templates=templates, descriptions_file=str(tmp_path / "d.json"))
    listed = model.hparams.templates if isinstance(templates, list) else None
    if listed is None:
        assert templates == "ensemble"  # the reference has no list for this dataset
        return
    with torch.no_grad():
        for c, name in enumerate(model.prompt_class_names):
            texts = descriptions[CLASSES[c]] + [t.format(name) for t in listed]
            features = model.backbone.encode_text(texts)
            expected = F.normalize(features.mean(dim=0), dim=-1)
            assert torch.allclose(model.stage1_weights[c], expected, atol=1e-5)
