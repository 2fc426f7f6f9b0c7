"""The app's tested API: projects, uploads (good and bad), DVC snapshots, runs, locking, cancelling."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from promptlab.configs import load_toy_config
from promptlab.deploy.classifier import Classifier
from promptlab.methods import DEFAULT_METHOD, MoCoOp, registered_methods
from promptlab.methods._base import ClassChangeError
from promptlab.methods._contract import PANEL_KINDS
from promptlab.workspace.class_changes import export_with_classes
from promptlab.workspace.project import MAX_UPLOAD_BYTES, ProjectError, Workspace
from promptlab.workspace.results import run_results, training_curves
from promptlab.workspace.run_record import LOCK_FILE, ZERO_SHOT_CLASSIFIER_FILE, RunSettings, update_run
from promptlab.workspace.runs import active_run, cancel_run, held_out_split, list_runs, run_status, start_run
from promptlab.workspace.snapshots import restore_snapshot, snapshot_files
from tests.ui_support import SHAPES, toy_project, wait_for_run


def png(size=(8, 8), colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def project(tmp_path):
    project = Workspace(tmp_path).create("pets")
    project.add_class("cat")
    project.add_class("dog")
    return project


def test_class_names_are_validated_like_the_cli(project):
    with pytest.raises(ProjectError, match="duplicate class names"):
        project.add_class("Cat")
    for bad in ["", "a/b", ".hidden", "x" * 81]:
        with pytest.raises(ProjectError):
            project.add_class(bad)
    with pytest.raises(ProjectError, match="duplicate"):
        project.rename_class("cat", "dog")
    project.add_images("cat", [("c.png", png())])
    project.set_descriptions({"cat": ["a small furry pet"]})
    project.rename_class("cat", "kitten")
    assert project.classes() == ["dog", "kitten"]
    assert len(project.images("kitten")) == 1
    assert project.descriptions() == {"kitten": ["a small furry pet"]}
    project.delete_class("kitten")
    assert project.classes() == ["dog"] and project.descriptions() == {}
    with pytest.raises(ProjectError, match="already exists"):
        Workspace(project.path.parent).create("pets")


def test_uploads_are_stored_by_content_and_bad_files_rejected(project):
    good = png()
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    truncated = png((64, 64), (1, 2, 3))[:-40]
    bomb = io.BytesIO()
    Image.new("1", (20000, 10000)).save(bomb, format="PNG")  # 200 Mpixel: over PIL's bomb limit, 30 KB on disk
    report = project.add_images(
        "cat",
        [
            ("../../evil.png", good),
            ("renamed.gif", jpeg.getvalue()),
            ("again.png", good),
            ("notes.png", b"not an image at all"),
            ("broken.png", truncated),
            ("bomb.png", bomb.getvalue()),
            ("huge.png", b"0" * (MAX_UPLOAD_BYTES + 1)),
        ],
    )
    stored = sorted(p.name for p in project.images("cat"))
    assert len(report.added) == 2 and sorted(report.added) == stored
    assert any(name.endswith(".jpg") for name in stored)  # suffix from the decoded format, not the upload name
    assert not (project.path.parent / "evil.png").exists() and not (project.data_dir / "evil.png").exists()
    assert report.duplicates == ["again.png"]
    reasons = dict(report.rejected)
    assert set(reasons) == {"notes.png", "broken.png", "bomb.png", "huge.png"}
    assert "notes.png" in reasons["notes.png"] and "decompression bomb" in reasons["bomb.png"].lower()
    # The same image under another class would carry two labels.
    ((_, reason),) = project.add_images("dog", [("dup.png", good)]).rejected
    assert "already stored in 'cat'" in reason
    assert not list(project.labelled_dir.rglob(".tmp-*"))  # no half-written files left behind


def test_runs_need_enough_images_per_class(project):
    with pytest.raises(ProjectError, match="Class 'cat' has no images"):
        start_run(project, RunSettings(method="coop"))
    project.add_images("cat", [("a.png", png())])
    project.add_images("dog", [("b.png", png(colour=(0, 0, 255))), ("c.png", png(colour=(0, 0, 200)))])
    with pytest.raises(ProjectError, match="Class 'cat' has only 1 image"):
        start_run(project, RunSettings(method="coop"))
    with pytest.raises(ProjectError, match="unlabelled pool"):
        start_run(project, RunSettings(method="nola"))
    assert not list_runs(project) and not (project.path / LOCK_FILE).exists()


def test_held_out_split_keeps_an_image_of_each_class_for_training_and_testing(tmp_path):
    project = toy_project(tmp_path, per_class=2)
    split = held_out_split(project, RunSettings(method="coop", test_fraction=0.5))
    assert len(split["train"]) == len(split["test"]) == 3
    assert {c for _, _, c in split["train"]} == set(SHAPES) == {c for _, _, c in split["test"]}
    zero_shot = held_out_split(project, RunSettings(method="zeroshot"))
    assert len(zero_shot["test"]) == 6
    project.add_class("star")  # NoLA needs no labelled images, but measures only with some in every class
    assert held_out_split(project, RunSettings(method="nola")) == {"train": [], "val": [], "test": []}


@pytest.mark.slow
def test_coop_run_end_to_end_with_snapshot_lock_and_results(tmp_path):
    project = toy_project(tmp_path, per_class=6)
    run_id = start_run(project, RunSettings(method="coop", epochs=20))
    with pytest.raises(ProjectError, match="still training"):  # training started twice
        start_run(project, RunSettings(method="coop"))
    assert active_run(project) == run_id
    record = wait_for_run(project, run_id)
    assert record["status"] == "finished", run_results(project.runs_dir / run_id).log_tail()
    assert active_run(project) is None and not (project.path / LOCK_FILE).exists()

    results = run_results(project.runs_dir / run_id)
    assert record["num_test"] == 6 and 0 <= record["accuracy"] <= 1
    # Zero-shot CLIP measured on the same held-out images, for comparison.
    assert (results.run_dir / "baseline" / "test_metrics.json").is_file() and 0 <= record["zero_shot_accuracy"] <= 1
    assert results.metrics["accuracy"] == record["accuracy"] and results.confusion_png is not None
    assert len(results.predictions) == 6
    # configs/toy/coop.yaml learns one context per class: 16 vectors each, 3 nearest words per vector.
    tables = results.panels
    assert [t.caption.split("**")[1] for t in tables] == list(SHAPES) and all(len(t.rows) == 16 for t in tables)
    assert all(set(row) == {"position", "word 1", "word 2", "word 3"} for row in tables[0].rows)
    curves = training_curves(results.run_dir)
    assert len(curves.loss) == 20 and curves.val_accuracy
    # The exported classifier reproduces the recorded predictions.
    classifier = Classifier.load(results.classifier_file, device="cpu")
    rows = results.predictions
    labels = [p.label for p in classifier.predict([str(project.data_dir / r["path"]) for r in rows])]
    assert labels == [r["predicted"] for r in rows]

    # Learned against zero-shot on validation images drawn from the training images.
    validation = record["validation"]
    val = json.loads((results.run_dir / "lightning" / "fewshot_split.json").read_text())["val"]
    held_out = {r["path"] for r in rows}
    assert validation["images"] == len(val) == 3 and not {path for path, _, _ in val} & held_out
    val_labels = classifier.predict([str(project.data_dir / path) for path, _, _ in val])
    assert validation["learned"] == pytest.approx(
        sum(p.label == c for p, (_, _, c) in zip(val_labels, val, strict=True)) / 3
    )
    assert 0 <= validation["zero_shot"] <= 1
    zero_shot_file = results.run_dir / ZERO_SHOT_CLASSIFIER_FILE
    assert (
        zero_shot_file.is_file() == validation["zero_shot_better"] == (validation["zero_shot"] > validation["learned"])
    )

    # The run can always be traced to its images: the snapshot survives deleting them.
    data_json = (results.run_dir / "lightning" / "data.json").read_text()
    assert record["data_version"] in data_json
    trained_on = snapshot_files(project.path, results.run_dir)
    assert len(trained_on) == 18
    project.delete_class("circle")
    restored = restore_snapshot(project.path, results.run_dir, tmp_path / "restored")
    assert len(list((restored / "labelled" / "circle").iterdir())) == 6


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """key -> the results of one app run of that method on a small toy project, run once per module."""
    runs: dict[str, tuple] = {}

    def run(method: str):
        if method not in runs:
            project = toy_project(tmp_path_factory.mktemp(method), per_class=3, pool=12)
            project.set_descriptions({"circle": ["a round shape"]})
            record = wait_for_run(project, start_run(project, RunSettings(method=method, epochs=3)))
            runs[method] = record, run_results(project.runs_dir / record["id"])
        return runs[method]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("method", [key for key in registered_methods() if key != DEFAULT_METHOD])
def test_every_method_runs_in_the_app_and_leaves_what_its_pages_show(method, finished_run):
    """The default method is followed in depth above; every other registered one through the same worker."""
    cls = registered_methods()[method]
    record, results = finished_run(method)
    assert record["status"] == "finished", results.log_tail()
    # A method that learns from labels holds out a share of them; the others are measured on every one.
    assert record["num_test"] == (3 if cls.learns_from == "labels" else 9)
    assert results.classifier_file is not None and len(results.predictions) == record["num_test"]
    assert all(panel.kind in PANEL_KINDS for panel in results.panels)
    assert (record["zero_shot_accuracy"] is None) == (not cls.trains())
    # A class added by name, without retraining, where the method's prompts allow it.
    more = [*SHAPES, "star"]
    try:
        extended = Classifier.load(export_with_classes(results.run_dir, more), device="cpu")
    except ClassChangeError as error:
        assert "cannot be added or removed without training again" in str(error)
    else:
        assert extended.class_names == more and "classes_changed" in extended.meta["metrics"]


@pytest.mark.slow
def test_a_mocoop_run_shows_its_experts_per_class(finished_run):
    _, results = finished_run("mocoop")
    bars, per_class = results.panels
    groups = load_toy_config(MoCoOp)["model"]["init_args"]["template_groups"]
    assert len(bars.values) == len(groups) and [row["class"] for row in per_class.rows] == list(SHAPES)


@pytest.mark.slow
def test_a_nola_run_shows_its_stages_and_refuses_new_classes(finished_run):
    record, results = finished_run("nola")
    # Compared with zero-shot on the labelled images, which it never trained on; zero-shot's classifier
    # is offered exactly when it did better.
    comparison = record["validation"]
    assert comparison["measured_on"] == "labelled" and comparison["images"] == 9
    assert comparison["learned"] == record["accuracy"] and comparison["zero_shot"] == record["zero_shot_accuracy"]
    offered = (results.run_dir / ZERO_SHOT_CLASSIFIER_FILE).is_file()
    assert offered == comparison["zero_shot_better"] == (record["zero_shot_accuracy"] > record["accuracy"])
    counts, stages, agreement = results.panels
    assert sum(counts.values.values()) == 12 and "the DINO labeller trained on its picks" in stages.text
    assert "the final classifier agrees with the DINO labeller (its teacher) on" in agreement.text
    with pytest.raises(ClassChangeError, match="cannot be added or removed without training again"):
        export_with_classes(results.run_dir, [*SHAPES, "star"])


@pytest.mark.slow
def test_nola_trains_from_class_names_and_unlabelled_images_alone(tmp_path):
    project = toy_project(tmp_path, per_class=0, pool=12)
    record = wait_for_run(project, start_run(project, RunSettings(method="nola", epochs=2)))
    results = run_results(project.runs_dir / record["id"])
    assert record["status"] == "finished", results.log_tail()
    assert record["accuracy"] is None and record["zero_shot_accuracy"] is None and not results.predictions
    assert Classifier.load(results.classifier_file, device="cpu").class_names == list(SHAPES)


@pytest.mark.slow
def test_cancel_and_a_dead_worker_release_the_lock(tmp_path):
    project = toy_project(tmp_path, per_class=4)
    run_id = start_run(project, RunSettings(method="coop", epochs=1000))
    deadline = time.monotonic() + 60
    while run_status(project.runs_dir / run_id).get("status") != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    cancel_run(project, run_id)
    assert wait_for_run(project, run_id, 30)["status"] == "cancelled"
    assert active_run(project) is None

    # The app restarted mid-training and the machine killed the worker: the run reads as interrupted,
    # and the lock does not block a new run.
    run_id = start_run(project, RunSettings(method="coop", epochs=1000))
    while run_status(project.runs_dir / run_id).get("status") != "running" and time.monotonic() < deadline + 60:
        time.sleep(0.2)
    os.killpg(run_status(project.runs_dir / run_id)["pid"], signal.SIGKILL)
    record = wait_for_run(project, run_id, 30)
    assert record["status"] == "interrupted" and "stopped unexpectedly" in record["error"]
    assert active_run(project) is None
    assert len(project.images("circle")) == 4  # no upload lost


@pytest.mark.slow
def test_training_outlives_the_app_process_that_started_it(tmp_path):
    project = toy_project(tmp_path, per_class=4)
    start_and_exit = (
        "import sys; from promptlab.workspace.project import Project; "
        "from promptlab.workspace.runs import start_run; "
        "from promptlab.workspace.run_record import RunSettings; "
        f"print(start_run(Project({str(project.path)!r}), RunSettings(method='coop', epochs=30)))"
    )
    app = subprocess.run([sys.executable, "-c", start_and_exit], capture_output=True, text=True, check=True)
    run_id = app.stdout.strip().splitlines()[-1]  # the app process has exited; its worker goes on
    assert wait_for_run(project, run_id)["status"] == "finished"


def test_failed_run_records_a_one_line_error(tmp_path):
    project = toy_project(tmp_path, per_class=2)
    run_id = start_run(project, RunSettings(method="coop", backbone="ViT-B-16", pretrained="openai", epochs=1))
    record = wait_for_run(project, run_id, 120)
    assert record["status"] == "failed" and "\n" not in record["error"] and "weights_path" in record["error"]
    assert active_run(project) is None


def test_interrupted_status_when_the_worker_is_gone(tmp_path):
    project = toy_project(tmp_path, per_class=2)
    run_dir = project.runs_dir / "r1"
    run_dir.mkdir(parents=True)
    update_run(run_dir, id="r1", method="coop", status="running", pid=2**22 + 12345)  # no such process
    (project.path / LOCK_FILE).write_text("r1")
    assert active_run(project) is None and run_status(run_dir)["status"] == "interrupted"
