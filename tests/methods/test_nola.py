"""NoLA: the stage-3 insertion point and head, gradients, pseudo-labels, bad input, CLI end to end."""

import json
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promptlab.cli import main
from promptlab.data import FewShotDataModule
from promptlab.deploy.classifier import Classifier
from promptlab.methods import NoLA
from promptlab.methods._descriptions import DescriptionsError, load_descriptions
from promptlab.methods._labeller import (
    OPENAI_NORMALISATION,
    LabellerError,
    load_dino,
    note_foreign_normalisation,
    select_pseudo_labels,
)
from promptlab.methods.nola import LABELLER_VS_ZERO_SHOT_BAND, agreement_panel, zero_shot_panel

CLASSES = ["blue_triangle", "green_circle", "red_square"]


def nola(**kwargs) -> NoLA:
    torch.manual_seed(0)
    args = {"class_names": CLASSES, "backbone": "clip-tiny", "pretrained": None, "dino": "toy-dino"}
    return NoLA(**(args | kwargs))


def test_without_prompts_stage3_predicts_exactly_stage1():
    model = nola(n_prompts=0).eval()
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        stage3 = model(images)
        stage1 = model.backbone.logit_scale * model.backbone.encode_image(images) @ model.stage1_weights.T
        # the same tower without the prompt hook: the insertion point changes nothing when empty
        plain = type(model.backbone.model.visual).forward(model.backbone.model.visual, images)
    # stage 3's raw f @ W.T is stage 1's logits times |f| / logit_scale per image: the same predictions
    assert torch.allclose(stage3, plain @ model.stage1_weights.T, atol=1e-5)
    assert torch.equal(stage3.argmax(-1), stage1.argmax(-1))
    assert torch.allclose(model.backbone.encode_image(images, normalize=False), plain, atol=1e-6)


def test_prompts_change_the_image_features_and_stages_1_2_run_without_them():

    model, plain = nola(n_prompts=4).eval(), nola(n_prompts=0).eval()  # same seed: same backbone
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with_prompts = model.backbone.encode_image(images)
        with model.backbone.without_visual_prompts():
            assert torch.allclose(model.backbone.encode_image(images), plain.backbone.encode_image(images), atol=1e-6)
        assert torch.allclose(model.backbone.encode_image(images), with_prompts)
        model.visual_prompts.zero_().add_(5.0)
        assert not torch.allclose(with_prompts, model.backbone.encode_image(images))


def test_gradients_reach_only_prompts_vision_layernorms_and_head():
    model = nola(n_prompts=4)
    model.train()
    logits = model(torch.randn(4, 3, 32, 32))
    logits.logsumexp(-1).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "visual_prompts" in with_grad and "head.weight" in with_grad
    others = with_grad - {"visual_prompts", "head.weight"}
    assert others and all(n.startswith("backbone.model.visual.") and ("ln" in n) for n in others)
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if not n.startswith("model.visual."))


def test_descriptions_must_match_the_classes(tmp_path):
    good = {"blue triangle": ["three sides"], "green_circle": ["round"], "red square": ["four sides"]}
    (tmp_path / "d.json").write_text(json.dumps(good))
    assert load_descriptions(tmp_path / "d.json", CLASSES)[0] == ["three sides"]
    (tmp_path / "bad.json").write_text(json.dumps({**good, "hexagon": ["six"]} | {"red square": None}))
    with pytest.raises(DescriptionsError, match="must map"):
        load_descriptions(tmp_path / "bad.json", CLASSES)
    (tmp_path / "bad.json").write_text(json.dumps({"blue triangle": ["x"], "hexagon": ["six"]}))
    with pytest.raises(DescriptionsError, match="missing: green_circle, red_square; unknown: hexagon"):
        load_descriptions(tmp_path / "bad.json", CLASSES)
    model = nola(descriptions_file=str(tmp_path / "d.json"), n_prompts=0)
    assert torch.allclose(model.stage1_weights.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_pseudo_labels_take_top_k_per_class_and_fall_back_to_second_choice(caplog):
    # 40 images: class 0 predicted by 30, class 1 by 10, class 2 by nobody (but ranked second by 10)
    probabilities = torch.zeros(40, 3)
    probabilities[:30] = torch.tensor([0.7, 0.1, 0.2])
    probabilities[:30, 0] += torch.linspace(0, 0.1, 30)
    probabilities[30:] = torch.tensor([0.1, 0.6, 0.3])
    valid = torch.ones(40, dtype=torch.bool)
    valid[29] = False  # unreadable: never picked
    indices, labels = select_pseudo_labels(probabilities, valid, CLASSES, min_per_class=4, fraction=0.2)
    picked = {c: indices[labels == c].tolist() for c in range(3)}
    assert picked[0] == [28, 27, 26, 25]  # the most confident of class 0, image 29 skipped
    assert len(picked[1]) == 4 and set(picked[1]) <= set(range(30, 40))
    assert len(picked[2]) == 4  # fallback: images ranking red_square second
    assert "red_square" in caplog.text
    assert len(set(indices.tolist())) == len(indices)


def test_real_dino_offline_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load", offline)
    with pytest.raises(LabellerError, match="needs the network once"):
        load_dino("dino_vitb16")
    with pytest.raises(LabellerError, match="Unknown DINO backbone"):
        load_dino("dino_vit_huge")


@pytest.mark.slow
def test_cli_label_free_fit_reports_stages_and_exports(image_folder, unlabelled_pool, tmp_path, capsys):
    unlabelled = unlabelled_pool
    runs = tmp_path / "runs"
    args = ["fit", "-c", "configs/tiny/nola.yaml", f"--data.root={image_folder}", f"--data.unlabelled={unlabelled}"]
    assert main([*args, f"--trainer.logger.init_args.save_dir={runs}"]) == 0
    (run,) = (p.parent for p in runs.rglob("nola_stages.json"))
    stages = json.loads((run / "nola_stages.json").read_text())
    assert stages["unlabelled_images"] == 31 and stages["unreadable_images"] == 1
    assert {"stage1_accuracy", "stage2_accuracy", "stage3_accuracy"} <= set(stages)
    labels_file = run / "nola_pseudo_labels.safetensors"
    assert labels_file.is_file()
    # The final classifier's agreement with its teacher, the description classifier and zero-shot, on the pool
    # (tests/test_benchmarks.py checks the zero-shot ones against ZeroShotCLIP's own predictions).
    for other in ("dino", "stage1", "zero_shot"):
        assert 0 <= stages[f"pool_agreement_final_vs_{other}"] <= 1
    assert 0 <= stages["pool_agreement_dino_vs_zero_shot"] <= 1
    saved = load_file(str(labels_file))
    assert saved["stage1_labels"].shape == saved["pool_labels"].shape == (31,)
    assert main(["export", "--run", str(run)]) == 0
    pool = FewShotDataModule(root=str(image_folder), label_free=True, unlabelled=str(unlabelled)).unlabelled_pool
    readable = [(i, s) for i, s in enumerate(pool[1]) if saved["pool_labels"][i] >= 0]
    final = Classifier.load(run / "classifier.safetensors", device="cpu").predict(
        [pool[0] / s.path for _, s in readable]
    )
    teacher = [CLASSES[saved["pool_labels"][i]] for i, _ in readable]
    agreement = sum(p.label == t for p, t in zip(final, teacher, strict=True)) / len(readable)
    assert agreement == pytest.approx(stages["pool_agreement_final_vs_dino"], abs=1 / len(readable))
    # a second run reuses stage 2's labels (no DINO is loaded, so a bad DINO name cannot matter)
    reuse = [f"--model.init_args.pseudo_labels_file={labels_file}", "--model.init_args.dino=not-a-dino"]
    assert main([*args, *reuse, f"--trainer.logger.init_args.save_dir={tmp_path / 'again'}"]) == 0

    assert main(["export", "--run", str(run)]) == 0
    classifier = Classifier.load(run / "classifier.safetensors", device="cpu")
    assert classifier.backbone.model.visual.visual_prompts.shape[0] == 4
    assert (
        main(["classify", "--classifier", str(run / "classifier.safetensors"), str(image_folder / "red_square")]) == 0
    )


@pytest.mark.slow
def test_label_free_fit_without_prompts_exports_and_prints_no_noise(image_folder, tmp_path, capsys):
    pool = tmp_path / "pool"  # class names and unlabelled images only: no validation or test split
    pool.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))):
        (pool / f"{i}.png").write_bytes(path.read_bytes())
    (tmp_path / "names.txt").write_text("red square\ngreen circle\nblue triangle\n")
    args = ["fit", "-c", "configs/tiny/nola.yaml", f"--data.class_names_file={tmp_path / 'names.txt'}"]
    args += [f"--data.unlabelled={pool}", "--trainer.max_epochs=1"]
    args += ["--model.init_args.n_prompts=0", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]
    outside = tmp_path / "elsewhere" / "labels.safetensors"  # as "$UNSET/labels.safetensors" would be, at the root
    assert main([*args, f"--model.init_args.pseudo_labels_file={outside}"]) == 2
    assert "does not exist, and NoLA writes new ones only inside the run folder" in capsys.readouterr().err
    assert not outside.parent.exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in caught if "across ranks is zero" in str(w.message)]  # no validation split, on purpose
    (run,) = (p.parent for p in (tmp_path / "runs").rglob("nola_stages.json"))
    assert main(["export", "--run", str(run)]) == 0
    file = run / "classifier.safetensors"
    assert Classifier.load(file, device="cpu").meta["backbone"]["visual_prompts"] == 0
    assert main(["classify", "--classifier", str(file), str(pool)]) == 0
    assert main(["export", "--classifier", str(file), "-o", str(run / "c.onnx")]) == 0


def test_the_labeller_is_said_to_see_a_normalisation_it_was_not_trained_with():
    openai = OPENAI_NORMALISATION
    assert note_foreign_normalisation("toy-dino", *openai) is None
    note = note_foreign_normalisation("dino_vitb16", *openai)
    assert "as its reference does" in note and "(0.485, 0.456, 0.406)" in note and note.count(". ") == 0
    assert note_foreign_normalisation("dino_vitb16", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) is None


def test_export_predicts_exactly_what_the_module_predicts(image_folder, tmp_path):
    from promptlab.export import export_classifier

    model = nola(n_prompts=4).eval()
    with torch.no_grad():
        model.visual_prompts.normal_()
        model.head.weight.add_(torch.randn_like(model.head.weight) * 0.1)
        for p in model.backbone.model.visual.ln_post.parameters():
            p.add_(0.1)
    classifier = Classifier.load(export_classifier(model, tmp_path / "nola.safetensors"), device="cpu")
    images = sorted(image_folder.rglob("*.png"))[:9]
    batch = classifier._batches(images, len(images))[0]
    with torch.no_grad():
        expected = model(batch).softmax(-1)
    assert torch.allclose(classifier.predict_proba(images), expected, atol=1e-5)


def test_nola_without_label_free_data_is_a_clear_error(image_folder, tmp_path, capsys):
    args = ["fit", "-c", "configs/tiny/nola.yaml", f"--data.root={image_folder}", "--data.label_free=false"]
    assert main([*args, f"--trainer.logger.init_args.save_dir={tmp_path}"]) == 2
    assert "label_free" in capsys.readouterr().err


def test_the_inspect_panel_warns_when_the_classifier_disagrees_with_its_teacher():
    stages = {"unlabelled_images": 40, "pool_label_agreement_stage1_vs_dino": 0.8, "pool_agreement_final_vs_dino": 0.9}
    calm = agreement_panel(stages)
    assert "the final classifier agrees with the DINO labeller (its teacher) on 90%" in calm.text and not calm.warning
    weak = agreement_panel(stages | {"pool_agreement_final_vs_dino": 0.55, "pool_agreement_final_vs_stage1": 0.5})
    assert "disagrees with the labels it was trained on for 45% of the pool" in weak.warning
    assert "and with the description classifier on 50%" in weak.text


@pytest.mark.parametrize(
    ("agreement", "sign"), [(0.6, "wrong more often than zero-shot"), (0.75, ""), (0.9, "adds little")]
)
def test_a_run_without_labels_says_whether_it_shows_the_sign_of_a_loss(agreement, sign):
    panel = zero_shot_panel(agreement)
    assert f"changed zero-shot CLIP's answer on {1 - agreement:.0%} of your unlabelled images" in panel.text
    assert "not a measurement" in panel.text and "Not measured" in panel.title
    assert (
        (sign in panel.warning and "probably did worse than zero-shot" in panel.warning) if sign else not panel.warning
    )


def test_the_band_is_the_one_the_benchmark_chose():
    chosen = json.loads(Path("benchmarks/nola_loss_signals.json").read_text())["chosen"]
    assert chosen["reported_as"] == "pool_agreement_dino_vs_zero_shot"
    low, high = LABELLER_VS_ZERO_SHOT_BAND
    assert low == pytest.approx(chosen["low"], abs=1e-3) and high == pytest.approx(chosen["high"], abs=1e-3)
