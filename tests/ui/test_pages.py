"""Every page of the Streamlit app, in-process with Streamlit's AppTest (no browser)."""

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from promptlab.methods._contract import panels_to_json
from promptlab.methods.nola import zero_shot_panel
from promptlab.workspace.labelling import set_aside
from promptlab.workspace.project import UploadReport, Workspace
from promptlab.workspace.run_record import INSPECTION_FILE, RUN_FILE, RunSettings, write_json
from promptlab.workspace.runs import cancel_run, start_run
from tests.ui_support import toy_project, wait_for_run

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
PAGES = ["data", "train", "inspect_run", "try_it", "export", "runs"]


def open_page(page: str, project: str | None = "shapes", **state) -> AppTest:
    """Runs the app on ``pages/<page>.py`` with ``project`` open; fails on any uncaught exception."""
    at = AppTest.from_file(APP, default_timeout=60)
    if project:
        at.session_state["project"] = project
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page != "projects":
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """All the text a user reads on the page, joined."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "success", "warning", "error", "code"):
        parts += [str(element.value) for element in getattr(at, kind)]
    return "\n".join(parts)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A workspace whose project ``shapes`` has finished CoOp, MoCoOp and NoLA runs and one failed run."""
    root = tmp_path_factory.mktemp("trained")
    project = toy_project(root, per_class=6, pool=12)
    for settings in [RunSettings("coop", epochs=10), RunSettings("mocoop", epochs=3), RunSettings("nola", epochs=3)]:
        assert wait_for_run(project, start_run(project, settings))["status"] == "finished"
    failed = start_run(project, RunSettings(method="coop", backbone="ViT-B-16", pretrained="openai", epochs=1))
    assert wait_for_run(project, failed)["status"] == "failed"
    return root


def select_run(at: AppTest, text: str) -> AppTest:
    """Picks the first run whose label in the run select box contains ``text``."""
    box = at.selectbox[-1]
    return box.select_index(next(i for i, option in enumerate(box.options) if text in option)).run()


@pytest.fixture
def trained_workspace(trained, monkeypatch) -> Path:
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(trained))
    return trained


@pytest.mark.parametrize("page", PAGES)
def test_pages_without_a_project_point_to_the_projects_page(workspace, page):
    at = open_page(page, project=None)
    assert "Open or create a project" in texts(at)


def test_projects_page_creates_projects_and_rejects_bad_names(workspace):
    at = open_page("projects", project=None)
    at.text_input[0].input("my pets")
    at.button[0].click().run()
    assert Workspace(workspace).projects() == ["my pets"]
    assert "Created project 'my pets'" in texts(at)
    for bad, message in [
        ("my pets", "already exists"),
        ("My Pets", "names ignore case"),
        ("a/b", "contains '/'"),
        ("   ", "empty"),
    ]:
        at.text_input[0].input(bad)
        at.button[0].click().run()
        assert message in texts(at)
    assert Workspace(workspace).projects() == ["my pets"]
    assert at.dataframe[0].value["project"].tolist() == ["my pets"]


def test_data_page_manages_classes_and_reports_uploads(workspace):
    project = Workspace(workspace).create("shapes")
    at = open_page("data")
    at.text_input[0].input("circle")
    at.button[0].click().run()
    at.text_input[0].input("Circle")  # reads the same as "circle" in a prompt
    at.button[0].click().run()
    assert "duplicate class names" in texts(at)
    assert project.classes() == ["circle"]
    assert "This class has no images yet." in texts(at)

    # Upload outcomes are reported one line each (the browser test drives the real uploader).
    report = UploadReport(
        added=["a.png"], duplicates=["b.png"], rejected=[("notes.txt", "Cannot read image 'notes.txt'")]
    )
    at = open_page("data", last_report=report)
    shown = texts(at)
    assert "Added 1 image(s)" in shown and "1 duplicate(s)" in shown and "Cannot read image 'notes.txt'" in shown

    at.text_input(key="rename-circle").input("disc")
    at.button(key="rename-btn-circle").click().run()
    assert project.classes() == ["disc"]
    assert at.button(key="delete-disc").disabled  # deleting needs the confirmation box
    at.checkbox(key="sure-disc").check().run()
    at.button(key="delete-disc").click().run()
    assert project.classes() == []


def test_data_page_suggests_pool_images_and_labels_them_in_one_click(tmp_path, monkeypatch):
    """From zero-shot before any run; one click labels, "none of these" sets aside."""
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    project = toy_project(tmp_path, per_class=2, pool=8)
    at = open_page("data")
    assert "Label these next" in texts(at) and "Ranked by zero-shot CLIP (toy-clip)" in texts(at)
    yes = [b for b in at.button if b.label.startswith("It is ")]
    assert len(yes) == 6
    guess = yes[0].label.removeprefix("It is ")
    at = yes[0].click().run()
    assert not at.exception and len(project.images(None)) == 7 and len(project.images(guess)) == 3
    other = at.selectbox(key=at.selectbox[0].key)
    target = other.options[0]
    at = other.select(target).run()
    assert len(project.images(None)) == 6 and len(project.images(target)) == 3 + (target == guess)
    at = next(b for b in at.button if b.label == "None of these").click().run()
    assert len(project.images(None)) == 6 and len(set_aside(project)["none_of_these"]) == 1
    assert len([b for b in at.button if b.label.startswith("It is ")]) == 5  # 5 left to suggest


def test_data_page_warns_about_a_class_with_one_image_and_saves_descriptions(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    project = toy_project(tmp_path, per_class=1)
    at = open_page("data")
    assert "One image is not enough" in texts(at)
    at.text_area(key="desc-circle").input("a round shape\n\nlike a coin")
    at.button(key="FormSubmitter:descriptions-Save descriptions").click().run()
    assert project.descriptions() == {"circle": ["a round shape", "like a coin"]}


def test_train_page_explains_what_is_missing(workspace):
    project = Workspace(workspace).create("shapes")
    project.add_class("circle")
    project.add_class("square")
    at = open_page("train")
    assert "Class 'circle' has no images" in texts(at)
    at.button[-1].click().run()  # Start training anyway
    assert "Class 'circle' has no images" in "\n".join(e.value for e in at.error)
    assert not project.runs_dir.exists() or not any(project.runs_dir.iterdir())


@pytest.mark.parametrize(
    ("per_class", "method", "epochs", "words"),
    [(4, "zeroshot", None, "nothing learned measured above"), (8, "mocoop", 200, "mixture of prompts")],
)
def test_train_page_preselects_by_the_images_each_class_has(tmp_path, monkeypatch, per_class, method, epochs, words):
    """4 images per class leave 3 to train on (zero-shot), 8 leave 6 (MoCoOp)."""
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    toy_project(tmp_path, per_class=per_class)
    at = open_page("train")
    assert [r.value for r in at.radio if r.label == "Method"] == [method] and words in texts(at)
    assert at.radio[0].label == "Learns from"  # the preselected method's group comes first
    held_out = round(0.3 * per_class)
    assert f"{per_class} images per class: {per_class - held_out} to train, {held_out} held out to measure" in texts(at)
    if epochs:
        assert at.number_input[0].value == epochs


def test_data_page_points_to_training_once_every_class_has_images(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    toy_project(tmp_path, per_class=4)
    at = open_page("data")
    assert [link.proto.label for link in at.get("page_link")][:1] == ["Next: train a classifier on these 12 images"]


@pytest.mark.slow
def test_train_page_starts_shows_and_cancels_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    project = toy_project(tmp_path, per_class=4)
    at = open_page("train")
    at.radio[0].set_value("Your labelled images").run()  # 3 training images per class preselect zero-shot
    next(r for r in at.radio if r.label == "Method").set_value("coop").run()
    at.number_input[0].set_value(1000)  # epochs: long enough to cancel
    at.button[-1].click().run()
    (run,) = [p.name for p in project.runs_dir.iterdir()]
    assert f"Training {run}" in texts(at)
    assert not any(b.label == "Start training" for b in at.button)  # no second run while one trains

    # A browser refresh or an app restart finds the run still training.
    at = open_page("train")
    assert f"Training {run}" in texts(at)
    at.button[0].click().run()  # Cancel training
    assert wait_for_run(project, run, 30)["status"] == "cancelled"
    assert f"Cancelled run {run}" in texts(at) or "Start training" in [b.label for b in at.button]


@pytest.mark.slow
def test_train_page_refuses_a_second_run_started_from_another_tab(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTLAB_WORKSPACE", str(tmp_path))
    project = toy_project(tmp_path, per_class=4)
    at = open_page("train")  # this tab still shows the Start button...
    run = start_run(project, RunSettings(method="coop", epochs=1000))  # ...when another tab starts a run
    at.button[-1].click().run()  # the rerun finds the other run first and shows it instead
    assert f"Training {run}" in texts(at)
    assert [p.name for p in project.runs_dir.iterdir()] == [run]
    cancel_run(project, run)


def test_train_page_reports_the_last_run(trained_workspace):
    at = open_page("train")
    assert "failed" in texts(at) and "weights_path" in texts(at)


def test_train_page_says_a_label_free_run_without_labels_is_unmeasured(workspace):
    """A finished NoLA run with no labelled images: the Train page says it is not measured and repeats the
    run's own warning of a likely loss to zero-shot CLIP.
    """
    run_dir = Workspace(workspace).create("shapes").runs_dir / "20261207-000000-nola"
    run_dir.mkdir(parents=True)
    write_json(run_dir / RUN_FILE, {"id": run_dir.name, "method": "nola", "status": "finished", "accuracy": None})
    write_json(run_dir / INSPECTION_FILE, {"panels": panels_to_json([zero_shot_panel(0.95)])})
    shown = texts(open_page("train"))
    assert "Not measured against zero-shot CLIP: this run had no labelled images" in shown
    assert "This run probably did worse than zero-shot CLIP: its labeller changed only 5%" in shown


def test_inspect_page_shows_accuracy_confusion_matrix_and_what_each_method_learned(trained_workspace):
    at = select_run(open_page("inspect_run"), "-coop · finished")
    assert [m.label for m in at.metric][:3] == ["Accuracy", "Macro F1", "Held-out images"]
    assert at.metric[2].value == "6" and ("vs zero-shot" in at.metric[0].delta or "within noise" in at.metric[0].delta)
    shown = texts(at)
    assert "on 6 held-out images, 95% interval" in shown and "(Wilson)" in shown
    if "within noise" in at.metric[0].delta:  # on 6 images, anything short of 6 of 6 against 0 of 6 is
        assert "more held-out images would tell them apart" in shown
    assert "Per-class accuracy" in shown and "Confusion matrix" in shown and "Misclassified" in shown
    assert "nearest words" in shown and len(at.dataframe) == 3  # configs/toy/coop.yaml: one context per class

    at = select_run(at, "-mocoop")
    assert "which expert prompts the router picks" in texts(at) and len(at.dataframe) == 1  # per-class routing

    at = select_run(at, "-nola")
    shown = texts(at)
    assert "pseudo-labels of the unlabelled pool" in shown and "the DINO labeller trained on its picks" in shown
    assert at.metric[2].value == "18"  # NoLA learns without labels: every labelled image measures it

    at = select_run(at, "failed")
    assert "weights_path" in "\n".join(e.value for e in at.error)


def test_try_it_and_export_pages_offer_the_finished_run(trained_workspace):
    at = open_page("try_it")
    assert not at.error and [r.label for r in at.radio] == ["Image from"]
    assert [s.label for s in at.slider] == [
        'Answer "none of these" below',
        'Answer "none of these" to images unlike the training images, below familiarity',
    ]
    assert at.slider[0].value == 0.0 and 0 < at.slider[1].value < 2  # the threshold fitted when the run was tested
    assert len(at.selectbox[-1].options) == 3  # the finished runs only
    at = open_page("export")
    assert "Classifier.load" in texts(at) and "promptlab classify" in texts(at) and "promptlab serve" in texts(at)
    assert re.search(r"One file \(\d+\.\d (KB|MB)\)", texts(at)) and "promptlab_clip-*.whl" in texts(at)
    assert len(at.get("download_button")) == 1
    (make_onnx,) = [b for b in at.button if "ONNX" in b.label]
    at = make_onnx.click().run(timeout=120)
    assert not at.error and len(at.get("download_button")) == 2  # the classifier and its ONNX file


def test_export_page_adds_a_class_by_name_where_the_method_allows(trained_workspace):
    at = select_run(open_page("export"), "-mocoop")
    assert at.text_area[0].value == "circle\nsquare\ntriangle"
    at.text_area[0].set_value("circle\nsquare\ntriangle\nstar").run()
    at = next(b for b in at.button if b.label == "Export with these classes").click().run(timeout=120)
    assert not at.error and "4 classes: circle, square, triangle, star" in texts(at)
    assert any("with these classes" in b.label for b in at.get("download_button"))
    at = select_run(at, "-nola")
    at.text_area[0].set_value("circle\nsquare").run()
    at = next(b for b in at.button if b.label == "Export with these classes").click().run(timeout=120)
    assert "cannot be added or removed without training again" in at.error[0].value


def test_runs_page_lists_every_run_and_the_best(trained_workspace):
    at = open_page("runs")
    table = at.dataframe[0].value
    assert sorted(table["status"]) == ["failed", "finished", "finished", "finished"]
    assert "Best so far" in texts(at)


def test_cancel_run_of_a_finished_run_changes_nothing(trained_workspace):
    project = Workspace(trained_workspace).open("shapes")
    finished = sorted(p.name for p in project.runs_dir.iterdir())[0]
    cancel_run(project, finished)
    assert open_page("runs").dataframe[0].value["status"].tolist().count("finished") == 3


def test_the_app_listens_on_loopback_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
