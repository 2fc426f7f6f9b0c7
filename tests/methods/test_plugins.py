"""A method added from outside promptlab (registered at run time) reaches the app's Train page, a
worker run, the Inspect page, export and classify with no other change."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.methods import CLIPClassifier, register_method, registered_methods, unregister_method
from promptlab.methods._contract import Bars, Panel, Setting
from promptlab.workspace.results import run_results
from promptlab.workspace.run_record import RunSettings
from promptlab.workspace.runs import start_run
from tests.ui.test_pages import open_page, texts
from tests.ui_support import SHAPES, toy_project


class ClassMeans(CLIPClassifier):
    """A throwaway method: each class's feature is the mean of its training images' features, mixed
    with the class name's text feature by ``text_weight``."""

    key = "class_means"
    label = "Class means (plugin test)"
    about = "A test method: the mean image feature of each class."
    settings = (Setting("text_weight", "Weight of the class name", 0.5, 0.0, 1.0),)
    uses_epochs = False

    def __init__(self, text_weight: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        text = self.backbone.encode_text([f"a photo of a {n}." for n in self.prompt_class_names])
        self.register_buffer("means", text.clone())  # (C, D), set in on_fit_start

    def class_features(self) -> torch.Tensor:
        return self.means

    def training_step(self, batch, batch_idx):
        return None

    def on_fit_start(self) -> None:
        features, labels = self.data.split_features("train", augmented=False)  # (N, 1, D)
        sums = torch.zeros_like(self.means).index_add_(0, labels.to(self.means.device), features[:, 0].to(self.means))
        self.means.copy_(F.normalize(self.hparams.text_weight * self.means + F.normalize(sums, dim=-1), dim=-1))

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        return [Bars("What the class means are made of", {"text weight": self.hparams.text_weight})]


@pytest.fixture
def plugin():
    register_method(ClassMeans)
    yield ClassMeans
    unregister_method(ClassMeans.key)


def test_a_registered_method_reaches_the_train_page(plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    toy_project(tmp_path, per_class=2)
    at = open_page("train")
    at.radio[0].set_value("Your labelled images").run()  # 2 images per class preselect zero-shot's group
    methods = next(r for r in at.radio if r.label == "Method")
    assert ClassMeans.label in methods.options
    methods.set_value(ClassMeans.key).run()
    shown = texts(at)
    assert ClassMeans.about in shown
    assert any(n.label == "Weight of the class name" for n in at.number_input)


@pytest.mark.slow
def test_a_registered_method_trains_in_the_worker_exports_and_classifies(plugin, tmp_path, monkeypatch, capsys):
    project = toy_project(tmp_path, per_class=4)
    settings = RunSettings(ClassMeans.key, options={"text_weight": 0.25})
    run_id = start_run(project, settings, in_process=True)
    results = run_results(project.runs_dir / run_id)
    assert results.record["status"] == "finished", results.log_tail()
    assert results.record["accuracy"] is not None and len(results.predictions) == results.record["num_test"]
    assert results.panels == [Bars("What the class means are made of", {"text weight": 0.25})]

    classifier = Classifier.load(results.classifier_file, device="cpu")
    assert classifier.meta["method"] == "ClassMeans" and classifier.class_names == list(SHAPES)
    image = project.data_dir / results.predictions[0]["path"]
    assert classifier.predict([str(image)])[0].label == results.predictions[0]["predicted"]
    capsys.readouterr()
    assert main(["classify", "--classifier", str(results.classifier_file), str(image)]) == 0
    assert results.predictions[0]["predicted"] in capsys.readouterr().out

    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    at = open_page("inspect_run")
    assert "What the class means are made of" in texts(at)
    assert ClassMeans.key in registered_methods()


def test_installed_plugins_join_through_entry_points(monkeypatch):
    import promptlab.methods as methods

    class EntryPoint:
        def load(self):
            return ClassMeans

    monkeypatch.setattr(methods, "entry_points", lambda group: [EntryPoint()] if group == "promptlab.methods" else [])
    monkeypatch.setattr(methods, "_entry_points_loaded", False)
    try:
        assert methods.registered_methods()[ClassMeans.key] is ClassMeans
        assert methods.method_class("ClassMeans") is ClassMeans  # by class name, as checkpoints record it
    finally:
        unregister_method(ClassMeans.key)
