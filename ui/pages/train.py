"""Train: pick a method and a backbone, start a background run, watch it, cancel it."""

import streamlit as st
from common import flash, require_project, show_flashes

from promptlab.methods import DEFAULT_METHOD, registered_methods
from promptlab.workspace.defaults import default_run
from promptlab.workspace.measurement import accuracy_note
from promptlab.workspace.method_choice import method_groups, training_cost
from promptlab.workspace.project import ProjectError
from promptlab.workspace.results import method_label, run_results, training_curves
from promptlab.workspace.run_record import PROGRESS_FILE, RunSettings, read_json
from promptlab.workspace.runs import (
    BACKBONES,
    active_run,
    cancel_run,
    check_trainable,
    held_out_count,
    list_runs,
    run_status,
    start_run,
)

STAGES = {  # progress.json stage -> (what the user reads, progress bar)
    "starting": ("Starting…", 0.0),
    "preparing": ("Loading the model and computing image features…", 0.0),
    "testing": ("Measuring accuracy on the held-out images…", 1.0),
    "inspecting": ("Exporting the classifier…", 1.0),
    "baseline": ("Measuring zero-shot CLIP on the same images, for comparison…", 1.0),
}
PRESETS = {"Standard (200 epochs)": 200, "Quick (50 epochs)": 50}  # benchmarks/app_presets.md
DEFAULT_TEST_FRACTION = 0.3

project = require_project()
st.title(f"Train · {project.name}")
show_flashes()


@st.fragment(run_every=2)
def live_run(run_id: str) -> None:
    """Progress, curves and Cancel of the running run; refreshes itself every 2 s."""
    run_dir = project.runs_dir / run_id
    status, progress = run_status(run_dir).get("status"), read_json(run_dir / PROGRESS_FILE)
    if status not in ("queued", "running"):
        st.rerun()  # finished: redraw the whole page
    st.subheader(f"Training {run_id}")
    stage = progress.get("stage", "starting")
    if stage == "training" and progress.get("total_steps"):
        done = min(progress.get("step", 0) / progress["total_steps"], 1.0)
        st.progress(done, text=f"Epoch {progress.get('epoch', 0) + 1} of {progress.get('max_epochs')} · {done:.0%}")
    else:
        text, done = STAGES.get(stage, (stage, 0.0))
        st.progress(done, text=text)
    curves = training_curves(run_dir)
    left, right = st.columns(2)
    if curves.loss:
        left.line_chart({"loss": [v for _, v in curves.loss]}, x_label="step", y_label="training loss")
    if curves.val_accuracy:
        right.line_chart(
            {"validation accuracy": [v for _, v in curves.val_accuracy]}, x_label="evaluation", y_label="accuracy"
        )
        right.caption("On a share of the training images kept back; the held-out images stay unseen until the end.")
    if st.button("Cancel training", type="secondary"):
        cancel_run(project, run_id)
        flash(f"Cancelled run {run_id}.", "warning")
        st.rerun()


def show_validation(validation: dict | None) -> None:
    """The learned classifier against zero-shot CLIP on the validation images, and the advice that follows."""
    if not validation or validation.get("zero_shot") is None:
        return
    learned, zero_shot, images = validation["learned"], validation["zero_shot"], validation["images"]
    label_free = validation.get("measured_on") == "labelled"
    where = (
        "labelled images (it never saw their labels)"
        if label_free
        else "validation images (a share of your training images)"
    )
    compared = f"on {images} {where}: learned {learned:.1%}, zero-shot CLIP {zero_shot:.1%}"
    if validation["zero_shot_better"] and label_free:
        st.warning(
            f"Zero-shot CLIP did better than the label-free classifier {compared}. Learning without labels did "
            "not help on this project: the Export page offers the zero-shot classifier."
        )
    elif validation["zero_shot_better"]:
        st.warning(
            f"Zero-shot CLIP did better than the learned classifier {compared}. With this little data, learning "
            "did not help: the Export page offers the zero-shot classifier. More images per class usually change this."
        )
    else:
        st.caption(f"Compared {compared}.")


running = active_run(project)
if running:
    live_run(running)
    st.stop()

latest = next(iter(list_runs(project)), None)
if latest and latest.get("status") == "finished":
    accuracy = latest.get("accuracy")
    shown = (
        f"{accuracy:.1%} {accuracy_note(accuracy, latest.get('num_test') or 0)}"
        if accuracy is not None
        else "no test images"
    )
    if latest.get("zero_shot_accuracy") is not None:
        shown += f" (zero-shot CLIP: {latest['zero_shot_accuracy']:.1%})"
    st.success(f"Last run {latest['id']} ({method_label(latest['method'])}) finished: {shown}.")
    show_validation(latest.get("validation"))
    warnings = [p.warning for p in run_results(project.runs_dir / latest["id"]).panels if getattr(p, "warning", "")]
    for warning in warnings:  # what the method itself warns about (NoLA: weak labels, a likely loss)
        st.warning(warning)
    learns_from = getattr(registered_methods().get(latest.get("method", "")), "learns_from", None)
    if not latest.get("validation") and learns_from == "unlabelled":
        st.caption(
            "Not measured against zero-shot CLIP: this run had no labelled images. Inspect shows what it can tell "
            "about itself; labelled images (they only measure it) would measure it."
        )
    st.page_link("pages/inspect_run.py", label="Inspect the classifier", icon=":material/search_insights:")
elif latest and latest.get("status") == "cancelled":
    st.info(f"Last run {latest['id']} was cancelled.")
elif latest and latest.get("status") in ("failed", "interrupted"):
    st.error(f"Last run {latest['id']} {latest['status']}: {latest.get('error')}")
    with st.expander("Log"):
        st.code(run_results(project.runs_dir / latest["id"]).log_tail())

methods = registered_methods()
counts = project.image_counts()
test_fraction_now = st.session_state.get("test_fraction", DEFAULT_TEST_FRACTION)  # the slider under Advanced
fewest = min((n for n in counts.values() if n > 1), default=0)
held_out = held_out_count(fewest, test_fraction_now) if fewest else 0
train_per_class = fewest - held_out
suggested = default_run(train_per_class)
preselected = suggested.method if suggested.method in methods else DEFAULT_METHOD
groups = method_groups(methods, preselected)  # the preselected method's group first, and it first in it
group = st.radio("Learns from", list(groups), horizontal=True)
method = st.radio("Method", groups[group], format_func=method_label, horizontal=True, key=f"method-{group}")
chosen = methods[method]
train_images = sum(n - held_out_count(n, test_fraction_now) for n in counts.values() if n > 1)
st.caption(f"{chosen.about} {training_cost(chosen, train_images)}")
if fewest:
    smallest = "per class" if len(set(counts.values())) == 1 else "in the smallest class"
    split = (
        f"{fewest} images {smallest}: {train_per_class} to train, {held_out} held out to measure accuracy on images "
        "training never sees (the share is under Advanced)."
    )
    st.info(f"{split} {suggested.why}" if method == suggested.method else split)
backbone_label = st.selectbox("Backbone", list(BACKBONES), help="toy-clip works offline; the others download weights.")
with_epochs = chosen.trains() and chosen.uses_epochs
presets = list(PRESETS)
if method == suggested.method and suggested.epochs in PRESETS.values():
    presets.sort(key=lambda name: PRESETS[name] != suggested.epochs)  # the suggested epochs first
preset = st.radio("Preset", presets, horizontal=True, disabled=not with_epochs)
with st.expander("Advanced"):
    epochs = st.number_input("Epochs", 1, 1000, PRESETS[preset], disabled=not with_epochs)
    options = {}
    for setting in chosen.settings:  # the method's own settings (learning rate, context length...)
        kind = int if setting.integer else float
        options[setting.name] = st.number_input(
            setting.label,
            kind(setting.minimum),
            kind(setting.maximum),
            kind(setting.default),
            format=None if setting.integer else "%.4f",
            key=f"{method}-{setting.name}",
        )
    batch_size = st.number_input("Batch size", 1, 512, 32)
    test_fraction = st.slider(
        "Held-out share of each class (measures accuracy)", 0.1, 0.5, DEFAULT_TEST_FRACTION, 0.05, key="test_fraction"
    )
    seed = st.number_input("Seed", 0, 10_000, 1)
    weights_path = st.text_input("Backbone weights file (when this machine cannot download them)")

model_name, pretrained = BACKBONES[backbone_label]
settings = RunSettings(
    method=method,
    backbone=model_name,
    pretrained=pretrained,
    weights_path=weights_path.strip() or None,
    epochs=int(epochs),
    batch_size=int(batch_size),
    test_fraction=float(test_fraction),
    seed=int(seed),
    options=options,
    extra=suggested.extra if method == suggested.method else {},
)
try:
    check_trainable(project, settings)
except ProjectError as error:
    st.warning(str(error))
if st.button("Start training", type="primary"):
    try:
        with st.spinner("Saving a snapshot of your data and starting…"):
            run_id = start_run(project, settings)
    except (ProjectError, OSError, RuntimeError) as error:
        st.error(str(error))
    else:
        flash(f"Started run {run_id}. You can leave this page; training continues in the background.", "info")
        st.rerun()
