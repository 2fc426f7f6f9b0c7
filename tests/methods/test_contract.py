"""The method contract, for every registered method: each is fitted on tiny data from its tiny config
(``configs/tiny/<its toy config>``), and then

- its exported ``.safetensors`` and ``.onnx`` classifiers predict what the module predicts,
- changing its classes works or is refused as it declares (``can_change_classes``),
- its app settings are valid init args within their ranges, and
- its Inspect panels are of the kinds the app renders and survive the worker's JSON.

A new built-in method is tested here by being registered, with no edit to this file.
"""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from promptlab.cli.lightning import lightning_cli
from promptlab.configs import shipped_config
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.onnx_runtime import OnnxClassifier
from promptlab.export import export_classifier
from promptlab.methods import CLIPClassifier, registered_methods
from promptlab.methods._base import ClassChangeError
from promptlab.methods._contract import PANEL_KINDS, panels_from_json, panels_to_json
from promptlab.run_folder import TEST_METRICS_FILE

METHODS = sorted(registered_methods())


def tiny_config(method: type) -> Path:
    """The method's tiny smoke-test config, named like its toy config."""
    assert method.toy is not None, f"{method.__name__} declares no toy config"
    path = shipped_config(f"tiny/{method.toy.config}")
    assert path is not None, f"{method.__name__} ships no configs/tiny/{method.toy.config}"
    return path


def init_args(method: type) -> set[str]:
    """The init args a method takes, its own and those its ``**kwargs`` pass to its bases."""
    return {
        name
        for cls in method.__mro__
        if issubclass(cls, CLIPClassifier)
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    }


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """key -> (the fitted module, its run folder, its test metrics), fitted once per module."""
    from tests.conftest import make_image_folder

    root = tmp_path_factory.mktemp("contract")
    images = make_image_folder(root / "images")
    cache: dict[str, tuple] = {}

    def fit(key: str):
        if key not in cache:
            method = registered_methods()[key]
            data = [f"--data.root={images}"]
            data += [f"--data.unlabelled={images}"] if method.learns_from == "unlabelled" else []
            cli = lightning_cli(
                [
                    "-c",
                    str(tiny_config(method)),
                    *data,
                    "--trainer.max_epochs=1",
                    "--trainer.enable_progress_bar=false",
                    "--trainer.enable_model_summary=false",
                    f"--trainer.logger.init_args.save_dir={root / 'runs'}",
                    f"--trainer.logger.init_args.name={key}",
                    "--seed_everything=1",
                ],
                run=False,
            )
            if method.trains():
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
            log_dir = Path(cli.trainer.log_dir)
            cache[key] = (cli.model.eval(), log_dir, json.loads((log_dir / TEST_METRICS_FILE).read_text()))
        return cache[key]

    return fit


@pytest.mark.slow
@pytest.mark.parametrize("key", METHODS)
def test_exported_files_predict_what_the_fitted_module_predicts(key, fitted, tmp_path):
    model, _, _ = fitted(key)
    torch.manual_seed(0)
    size = model.preprocess.size
    images = torch.rand(5, 3, size, size) * 2 - 1  # a batch size no export saw
    with torch.no_grad():
        expected = model(images).softmax(-1)
    loaded = Classifier.load(export_classifier(model, tmp_path / "c.safetensors"), device="cpu")
    assert loaded.meta["method"] == type(model).__name__
    assert torch.allclose(loaded.predict_proba(images), expected, atol=1e-5)
    runtime = OnnxClassifier(export_classifier(model, tmp_path / "c.onnx"))
    got = runtime.predict_proba(images.numpy())
    assert np.abs(got - expected.numpy()).max() < 1e-4
    assert (got.argmax(-1) == expected.argmax(-1).numpy()).all()


@pytest.mark.slow
@pytest.mark.parametrize("key", METHODS)
def test_class_changes_are_allowed_or_refused_as_declared(key, fitted):
    model, _, _ = fitted(key)
    names = [*model.class_names, "purple star"]
    if not model.can_change_classes:
        with pytest.raises(ClassChangeError, match=type(model).__name__):
            model.with_classes(names)
        return
    changed = model.with_classes(names).eval()
    assert changed.class_names == names and changed.backbone is model.backbone
    size = model.preprocess.size
    images = torch.rand(3, 3, size, size)
    with torch.no_grad():
        assert changed(images).shape == (3, len(names))
        # The classes it kept are scored as before: the learned part is shared, not retrained.
        kept = changed.with_classes(model.class_names).eval()
        assert torch.allclose(kept(images), model(images), atol=1e-5)


@pytest.mark.parametrize("key", METHODS)
def test_app_settings_are_init_args_within_their_ranges(key):
    method = registered_methods()[key]
    assert method.key == key and method.label and method.about
    assert method.learns_from in ("names", "labels", "unlabelled")
    parameters = init_args(method)
    for setting in method.settings:
        assert setting.minimum <= setting.default <= setting.maximum, setting
        assert setting.name in parameters, f"{setting.name} is not an init arg of {method.__name__}"
        with pytest.raises(ValueError, match=setting.label):
            method.init_args_from_settings({setting.name: setting.maximum + 1})
    assert set(method.init_args_from_settings({})) == {s.name for s in method.settings}
    for name in (*method.app_init_args, *([method.descriptions_arg] if method.descriptions_arg else [])):
        assert name in parameters, f"{name} is not an init arg of {method.__name__}"
    tiny_config(method)  # every built-in method can be tested on tiny data


@pytest.mark.slow
@pytest.mark.parametrize("key", METHODS)
def test_inspect_panels_are_of_kinds_the_app_renders(key, fitted):
    model, log_dir, metrics = fitted(key)
    panels = model.inspection_panels(log_dir, metrics)
    assert all(panel.kind in PANEL_KINDS for panel in panels)
    assert panels_from_json(panels_to_json(panels)) == panels
