"""Adding and removing class names without retraining: the learned prompts give the new names'
features; methods that learned something per class refuse with one sentence (every method: the
contract test)."""

import pytest
import torch

from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.methods import CoOp, ZeroShotCLIP
from promptlab.methods._base import ClassChangeError
from tests.builders import BUILDERS, CLASSES, TINY

NEW = ["purple star", "orange hexagon"]


@pytest.mark.parametrize("name", ["CoOp", "MoCoOp"])
def test_old_classes_keep_their_exact_features_and_new_ones_use_the_learned_prompts(name):
    torch.manual_seed(0)
    model = BUILDERS[name][0]().eval()
    extended = model.with_classes([*CLASSES, *NEW])
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        old, new = model(images), extended(images)
    assert extended.class_names == [*CLASSES, *NEW] and new.shape == (5, 5)
    # Softmax over more classes changes probabilities, never the old classes' logits.
    assert torch.allclose(new[:, :3], old, atol=1e-5)
    reordered = model.with_classes(CLASSES[::-1])
    with torch.no_grad():
        assert torch.allclose(reordered(images), old.flip(-1), atol=1e-5)


def test_new_class_features_are_what_training_with_them_would_give():
    """A CoOp built for the new names with the same context has the same features (no hidden state)."""
    torch.manual_seed(0)
    model = BUILDERS["CoOp"][0]()
    direct = CoOp(**{**TINY, "class_names": NEW}, n_ctx=4, _backbone_module=model.backbone)
    direct.ctx.data.copy_(model.ctx.data)
    with torch.no_grad():
        assert torch.allclose(model.with_classes(NEW).class_features(), direct.class_features(), atol=1e-6)


def test_zero_shot_changes_classes_too():
    model = ZeroShotCLIP(**TINY)
    assert model.with_classes(NEW).class_names == NEW


def test_class_specific_coop_refuses():
    model = CoOp(**TINY, n_ctx=2, class_specific=True)
    with pytest.raises(ClassChangeError, match=r"CoOp learned something for each of its 3 classes"):
        model.with_classes(CLASSES[:2])


def test_bad_new_names_are_refused():
    with pytest.raises(ValueError, match="class"):
        BUILDERS["CoOp"][0]().with_classes(["a", "a"])


def test_export_with_other_classes_from_a_run(image_folder, tmp_path, capsys):
    runs = tmp_path / "runs"
    common = [
        "-c",
        "configs/tiny/coop.yaml",
        f"--data.root={image_folder}",
        f"--trainer.logger.init_args.save_dir={runs}",
    ]
    assert main(["fit", *common, "--trainer.max_epochs=1", "--test_after_fit=false"]) == 0
    (run,) = sorted((runs / "lightning_logs").glob("version_*"))
    out = tmp_path / "more.safetensors"
    classes = ["blue_triangle", "green_circle", "red_square", "yellow_star"]
    assert main(["export", "--run", str(run), "-o", str(out), "--classes", *classes]) == 0
    classifier = Classifier.load(out, device="cpu")
    assert classifier.class_names == classes
    assert "3 classes it was trained on" in classifier.meta["metrics"]["classes_changed"]
    assert main(["export", "--run", str(run), "-o", str(out), "--classes", "a", "A"]) == 2
    assert "error:" in capsys.readouterr().err


def test_export_classifier_records_the_trained_classes(tmp_path):
    model = BUILDERS["CoOp"][0]()
    path = export_classifier(model.with_classes(NEW), tmp_path / "c.safetensors")
    assert Classifier.load(path, device="cpu").class_names == NEW
