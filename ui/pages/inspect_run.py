"""Inspect: accuracy, per-class accuracy, confusion matrix, mistakes and a look inside the classifier."""

import streamlit as st
from common import require_project, require_runs, show_panels

from promptlab.workspace.measurement import accuracy_note, within_noise
from promptlab.workspace.results import method_label, run_results, training_curves

project = require_project()
st.title(f"Inspect · {project.name}")
runs = require_runs(project)
record = st.selectbox("Run", runs, format_func=lambda r: f"{r['id']} · {r.get('status')}")
results = run_results(project.runs_dir / record["id"])
status = results.record.get("status")
if status != "finished":
    (st.error if status in ("failed", "interrupted") else st.info)(
        f"Run {record['id']} is {status}" + (f": {results.record['error']}" if results.record.get("error") else ".")
    )
    if status in ("failed", "interrupted", "cancelled"):
        with st.expander("Log"):
            st.code(results.log_tail())
    st.stop()

metrics = results.metrics
columns = st.columns(4)
baseline = results.record.get("zero_shot_accuracy")
measured_on = metrics.get("num_samples", 0) if metrics else 0
# Points over zero-shot, rounded as shown (+ 0.0 turns -0.0 into 0.0).
gain = round(100 * (metrics["accuracy"] - baseline), 1) + 0.0 if metrics and baseline is not None else None
noise = bool(gain) and within_noise(metrics["accuracy"], baseline, measured_on)
columns[0].metric(
    "Accuracy",
    f"{metrics['accuracy']:.1%}" if metrics else "–",
    delta=None if gain is None else f"{gain:+.1f} pts, within noise" if noise else f"{gain:+.1f} pts vs zero-shot",
    delta_color="off" if gain == 0 or noise else "normal",  # a tie or noise is neither green nor red
    help="Measured on the held-out images, which training never sees; the change is against zero-shot CLIP.",
)
columns[1].metric("Macro F1", f"{metrics['macro_f1']:.1%}" if metrics else "–")
columns[2].metric("Held-out images", metrics.get("num_samples", 0))
columns[3].metric("Training images", results.train_images)
if metrics:
    note = f"Accuracy {metrics['accuracy']:.1%} {accuracy_note(metrics['accuracy'], measured_on)}"
    if baseline is not None:
        note += f"; zero-shot CLIP {baseline:.1%} on the same images"
        if noise:
            note += (
                f". The {abs(gain or 0):.1f}-point difference to it is within noise at this number of images "
                "(its 95% interval includes 0): more held-out images would tell them apart"
            )
    st.caption(note + ".")
validation = results.record.get("validation") or {}
if validation.get("measured_on") == "labelled" and validation.get("zero_shot_better"):
    st.warning(
        f"This label-free run did worse than zero-shot CLIP on your {validation['images']} labelled images "
        f"({validation['learned']:.1%} against {validation['zero_shot']:.1%}); the Export page offers the "
        "zero-shot classifier."
    )
st.caption(
    f"{method_label(record['method'])} on {record.get('backbone')} · data version `{record.get('data_version')}` "
    "(a DVC snapshot of the project's images, kept with the run)"
)
if metrics and baseline is not None and metrics["accuracy"] < baseline and not noise:
    st.warning(
        f"Zero-shot CLIP did better on these images ({baseline:.1%}): with this few images the learned prompt "
        "overfits. Add more images per class, try another method or fewer epochs, or use a zero-shot run."
    )
if not metrics:
    st.info("This run had no labelled images to measure accuracy on.")
else:
    left, right = st.columns(2)
    with left:
        st.subheader("Per-class accuracy")
        st.bar_chart(metrics["per_class_accuracy"], horizontal=True, y_label="accuracy")
    with right:
        st.subheader("Confusion matrix")
        if results.confusion_png:
            st.image(str(results.confusion_png), width="stretch")

curves = training_curves(results.run_dir)
if curves.loss:
    st.subheader("Training curves")
    left, right = st.columns(2)
    left.line_chart({"loss": [v for _, v in curves.loss]}, x_label="step", y_label="training loss")
    if curves.val_accuracy:
        right.line_chart(
            {"validation accuracy": [v for _, v in curves.val_accuracy]}, x_label="evaluation", y_label="accuracy"
        )
        right.caption("On a share of the training images kept back; the held-out images stay unseen until the end.")

st.subheader("Misclassified held-out images")
mistakes = results.misclassified
if not mistakes:
    st.write("None: every held-out image was classified correctly." if results.predictions else "No held-out images.")
columns = st.columns(6)
for i, row in enumerate(mistakes[:24]):
    with columns[i % 6]:
        path = project.data_dir / row["path"]
        if path.is_file():
            st.image(str(path), width="stretch")
        st.caption(f"true **{row['true']}** → {row['predicted']} ({row['probability']:.0%})")

show_panels(results.panels)
