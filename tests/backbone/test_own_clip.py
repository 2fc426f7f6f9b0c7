"""Bring your own CLIP: local-dir: and hf-hub: backbones, preprocessing
overrides, refusing weights of another architecture, QuickGELU for OpenAI's tags, and exported
classifiers of such models loading in a process that never saw their config."""

import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from PIL import Image
from safetensors.torch import save_file

import promptlab.backbone.source as backbone_source
from promptlab.backbone import BackboneError, FrozenCLIP
from promptlab.backbone.source import resolve_backbone
from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.classifier_file import ClassifierFileError
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.export import export_classifier
from promptlab.methods import CoOp

# An architecture neither open_clip nor promptlab ships: 24-d embedding, 48-wide towers.
OWN_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 48, "head_width": 24, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1},
}
OWN_PREPROCESS = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}
CLASSES = ["blue triangle", "green circle", "red square"]


def save_state(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """A local-dir: folder as open_clip writes them: config plus weights of a random model."""
    folder = tmp_path_factory.mktemp("own-clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OWN_CFG, "preprocess_cfg": OWN_PREPROCESS}))
    torch.manual_seed(3)
    save_state(open_clip.model.CLIP(**OWN_CFG), folder / "open_clip_model.safetensors")
    return folder


def test_local_dir_backbone_matches_open_clip_exactly(own_folder):
    backbone = FrozenCLIP(f"local-dir:{own_folder}")
    reference = open_clip.create_model(f"local-dir:{own_folder}").eval()  # open_clip's own loading
    images = torch.randn(3, 3, 32, 32)
    assert backbone.embed_dim == 24
    assert torch.allclose(backbone.encode_image(images), reference.encode_image(images, normalize=True), atol=1e-6)
    text = ["a photo of a blue triangle.", "x"]
    tokens = open_clip.get_tokenizer(f"local-dir:{own_folder}")(text)
    assert torch.allclose(backbone.encode_text(text), reference.encode_text(tokens, normalize=True), atol=1e-6)
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5) and backbone.preprocess.interpolation == "bilinear"


def test_local_dir_errors_name_the_fix(tmp_path):
    with pytest.raises(BackboneError, match=r"does not exist; check the path"):
        FrozenCLIP(f"local-dir:{tmp_path / 'missing'}")
    with pytest.raises(BackboneError, match=r"has no open_clip_config.json"):
        FrozenCLIP(f"local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": OWN_CFG}))
    with pytest.raises(BackboneError, match=r"has no weights file; add one named open_clip_model.safetensors"):
        FrozenCLIP(f"local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"embed_dim": 3}))
    with pytest.raises(BackboneError, match=r"is not an open_clip config: it needs a model_cfg"):
        FrozenCLIP(f"local-dir:{tmp_path}")


def test_hf_hub_backbone_offline_names_the_fix(monkeypatch):
    def offline(repo, filename=None):
        raise OSError("We have no connection")

    monkeypatch.setattr(backbone_source, "download_pretrained_from_hf", offline)
    with pytest.raises(
        BackboneError,
        match=r"Cannot download open_clip_config.json of hf-hub:org/model .*"
        r"huggingface-cli download org/model --local-dir DIR.*local-dir:DIR",
    ):
        FrozenCLIP("hf-hub:org/model")


def test_hf_hub_backbone_loads_what_the_hub_serves(own_folder, monkeypatch):
    served = []

    def download(repo, filename=None):
        served.append((repo, filename))
        return str(own_folder / (filename or "open_clip_model.safetensors"))

    monkeypatch.setattr(backbone_source, "download_pretrained_from_hf", download)
    backbone = FrozenCLIP("hf-hub:org/model")
    local = FrozenCLIP(f"local-dir:{own_folder}")
    images = torch.randn(2, 3, 32, 32)
    assert served == [("org/model", "open_clip_config.json"), ("org/model", None)]
    assert torch.equal(backbone.encode_image(images), local.encode_image(images))
    assert backbone.preprocess == local.preprocess


def test_preprocess_override_and_its_errors(tmp_path):
    weights = save_state(FrozenCLIP("clip-tiny", pretrained=None).model, tmp_path / "w.safetensors")
    backbone = FrozenCLIP("clip-tiny", None, str(weights), preprocess={"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]})
    assert backbone.preprocess.mean == (0.1, 0.2, 0.3) and backbone.preprocess.std == (1, 1, 1)
    with pytest.raises(BackboneError, match=r"Unknown preprocess option 'crop'"):
        FrozenCLIP("clip-tiny", None, str(weights), preprocess={"crop": 3})
    with pytest.raises(
        BackboneError, match=r"preprocess.size 224 differs from the input size 32 of backbone 'clip-tiny'"
    ):
        FrozenCLIP("clip-tiny", None, str(weights), preprocess={"size": 224})
    with pytest.raises(BackboneError, match=r"preprocess.std must be three numbers"):
        FrozenCLIP("clip-tiny", None, str(weights), preprocess={"std": [1, 0, 1]})


def test_weights_without_tag_say_which_normalisation_once(tmp_path, caplog):
    weights = save_state(FrozenCLIP("clip-tiny", pretrained=None).model, tmp_path / "w.safetensors")
    with caplog.at_level(logging.INFO, logger="promptlab.backbone"):
        FrozenCLIP("clip-tiny", None, str(weights))
    lines = [r.getMessage() for r in caplog.records if "normalised with mean" in r.getMessage()]
    assert len(lines) == 1 and "0.48145466" in lines[0] and "set preprocess to change them" in lines[0]


def test_weights_of_another_text_length_are_refused(tmp_path):
    """open_clip would resize 16 text positions to 77 and only log it; promptlab refuses."""
    short_cfg = json.loads(json.dumps(open_clip.get_model_config("clip-tiny")))
    short_cfg["text_cfg"]["context_length"] = 16
    weights = save_state(open_clip.model.CLIP(**short_cfg), tmp_path / "short.safetensors")
    with pytest.raises(
        BackboneError,
        match=r"Weights file '.*short.safetensors' does not fit backbone 'clip-tiny': tensor 'positional_embedding' "
        r"has shape \(16, 64\) in the file and \(77, 64\) in the architecture",
    ):
        FrozenCLIP("clip-tiny", None, str(weights))


def test_missing_and_extra_tensors_are_refused(tmp_path):
    state = FrozenCLIP("clip-tiny", pretrained=None).model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items() if k != "ln_final.bias"}, str(tmp_path / "less.safetensors"))
    with pytest.raises(BackboneError, match=r"it lacks tensor 'ln_final.bias'"):
        FrozenCLIP("clip-tiny", None, str(tmp_path / "less.safetensors"))
    more = tmp_path / "more.safetensors"
    save_file({**{k: v.contiguous() for k, v in state.items()}, "extra.w": torch.zeros(2)}, str(more))
    with pytest.raises(BackboneError, match=r"it has tensor 'extra.w' that the architecture lacks"):
        FrozenCLIP("clip-tiny", None, str(more))
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(BackboneError, match=r"Cannot read weights file '.*notes.pt' for backbone 'clip-tiny'"):
        FrozenCLIP("clip-tiny", None, str(tmp_path / "notes.pt"))


def test_torchscript_weights_are_refused_without_loading(tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(path, "w") as archive:  # the layout of torch.jit.save, no code is ever run
        archive.writestr("ViT-B-16/code/__torch__/model.py", "raise SystemExit('ran')")
        archive.writestr("ViT-B-16/constants.pkl", b"")
    with pytest.raises(BackboneError, match=r"is a TorchScript archive .* loading it can run code"):
        FrozenCLIP("clip-tiny", None, str(path))


def test_openai_tags_use_quick_gelu():
    """OpenAI trained its CLIPs with QuickGELU; open_clip 3 builds GELU for `ViT-B-16` and only warns."""
    source = resolve_backbone("ViT-B-16", "openai", None, load_weights=False)
    assert source.model_cfg["quick_gelu"] is True and source.architecture == "ViT-B-16"
    assert (
        resolve_backbone("ViT-B-16", "laion2b_s34b_b88k", None, load_weights=False).model_cfg.get("quick_gelu") is None
    )
    quick = FrozenCLIP("clip-tiny", None, model_cfg={**open_clip.get_model_config("clip-tiny"), "quick_gelu": True})
    assert any(isinstance(m, QuickGELU) for m in quick.model.visual.modules())
    assert not any(isinstance(m, QuickGELU) for m in FrozenCLIP("clip-tiny", None).modules())


@pytest.mark.parametrize("embed", [True, False])
def test_classifier_of_own_clip_loads_in_a_fresh_process(own_folder, tmp_path, embed):
    torch.manual_seed(0)
    model = CoOp(class_names=CLASSES, backbone=f"local-dir:{own_folder}", pretrained=None, n_ctx=2)
    path = export_classifier(model, tmp_path / "c.safetensors", embed_backbone=embed)
    assert json.loads(json.dumps(Classifier.load(path, device="cpu").meta["backbone"]["model_cfg"])) == OWN_CFG
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    expected = Classifier.load(path, device="cpu").predict_proba([image])
    moved = tmp_path / "moved-weights.safetensors"
    moved.write_bytes((own_folder / "open_clip_model.safetensors").read_bytes())
    # A new interpreter has never registered OWN_CFG; the folder is named away when not embedded.
    script = (
        "import sys, torch; from promptlab.deploy.classifier import Classifier\n"
        f"c = Classifier.load({str(path)!r}, weights_path=None if {embed} else {str(moved)!r}, device='cpu')\n"
        f"torch.save(c.predict_proba([{str(image)!r}]), {str(tmp_path / 'p.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    assert torch.allclose(torch.load(tmp_path / "p.pt"), expected, atol=1e-6)


def exported_from_a_copy(own_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the own-CLIP folder and a CoOp classifier exported from it by reference (not embedded)."""
    folder = tmp_path / "own"
    folder.mkdir()
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        (folder / name).write_bytes((own_folder / name).read_bytes())
    model = CoOp(class_names=CLASSES, backbone=f"local-dir:{folder}", pretrained=None, n_ctx=2)
    return folder, export_classifier(model, tmp_path / "c.safetensors")


def test_classifier_without_its_folder_or_weights_says_pass_weights_path(own_folder, tmp_path):
    folder, path = exported_from_a_copy(own_folder, tmp_path)
    assert Classifier.load(path, device="cpu").meta["backbone"]["embedded"] is False  # loads from the folder
    (folder / "open_clip_model.safetensors").unlink()
    (folder / "open_clip_config.json").unlink()
    folder.rmdir()
    with pytest.raises(ClassifierFileError, match=r"needs the weights file it was exported with .*pass weights_path"):
        Classifier.load(path, device="cpu")


def test_a_classifier_whose_folder_moved_exports_and_classifies_with_weights_path(own_folder, tmp_path, caplog):
    folder, path = exported_from_a_copy(own_folder, tmp_path)
    moved = tmp_path / "moved.safetensors"
    (folder / "open_clip_model.safetensors").rename(moved)
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    onnx_file = tmp_path / "c.onnx"
    assert main(["export", "--classifier", str(path), "-o", str(onnx_file), "--weights_path", str(moved)]) == 0
    with caplog.at_level(logging.INFO):
        assert main(["classify", "--classifier", str(path), "--weights_path", str(moved), str(image)]) == 0
    # it normalises with the file's own mean and std, and says nothing else
    assert not [r for r in caplog.records if "open_clip's defaults" in r.getMessage()]
    expected = Classifier.load(path, weights_path=str(moved), device="cpu").predict_proba([image])
    assert np.allclose(OnnxClassifier(onnx_file).predict_proba([image]), expected.numpy(), atol=1e-5)
