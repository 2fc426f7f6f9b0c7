"""Export: download a run's classifier file (or its ONNX version), with code that loads and uses it."""

import streamlit as st
from common import pick_finished_classifier, require_project

from promptlab.deploy.classifier_file import read_classifier_file
from promptlab.deploy.onnx_export import classifier_file_to_onnx
from promptlab.errors import UserError
from promptlab.files import human_size
from promptlab.workspace.class_changes import export_with_classes
from promptlab.workspace.run_record import ZERO_SHOT_CLASSIFIER_FILE

project = require_project()
st.title(f"Export · {project.name}")
record, path = pick_finished_classifier(project)
file_name = f"{project.name.replace(' ', '_')}-{record['id']}.safetensors"
st.write(
    f"One file ({human_size(path.stat().st_size)}) holds the classifier: class names, the learned class features, "
    f"preprocessing and the reference to `{record.get('backbone')}` (or its image encoder's weights, when they "
    "cannot be downloaded). It is a safetensors file: loading it never runs code."
)
st.download_button(
    "Download the classifier", path.read_bytes(), file_name=file_name, type="primary", mime="application/octet-stream"
)
zero_shot_path = path.parent / ZERO_SHOT_CLASSIFIER_FILE
if zero_shot_path.is_file():
    validation = record.get("validation") or {}
    images = "labelled" if validation.get("measured_on") == "labelled" else "validation"
    st.warning(
        f"Zero-shot CLIP did better than this run's learned classifier on its {validation.get('images', '')} "
        f"{images} images ({validation.get('zero_shot', 0):.1%} against {validation.get('learned', 0):.1%}); "
        "you may prefer it."
    )
    st.download_button(
        "Download the zero-shot classifier",
        zero_shot_path.read_bytes(),
        file_name=file_name.replace(".safetensors", "-zero-shot.safetensors"),
        mime="application/octet-stream",
    )
onnx_path = path.with_suffix(".onnx")
if onnx_path.is_file() and onnx_path.stat().st_mtime >= path.stat().st_mtime:
    st.download_button(
        f"Download as ONNX ({onnx_path.stat().st_size / 2**20:.1f} MB, runs with onnxruntime, no PyTorch)",
        onnx_path.read_bytes(),
        file_name=file_name.replace(".safetensors", ".onnx"),
        mime="application/octet-stream",
    )
elif st.button("Make an ONNX file (runs with onnxruntime, no PyTorch)"):
    with st.spinner("Exporting the image encoder and head to ONNX..."):
        try:
            classifier_file_to_onnx(path, onnx_path)
        except (UserError, OSError) as error:
            st.error(str(error))
            st.stop()
    st.rerun()
st.subheader("Other classes, without retraining")
st.caption(
    "Zero-shot, CoOp with a shared context and MoCoOp learn prompts that every class shares, so a class can be "
    "added by its name (or removed) here; its text features are computed with what was learned. Accuracy on a "
    "new class is unmeasured until you test it: on the toy world both beat zero-shot CLIP on added classes, but "
    "with an earlier toy CLIP CoOp's context fell 5 points below it (benchmarks/new_classes_*.md)."
)
trained_classes = read_classifier_file(path)[0]["class_names"]
names_text = st.text_area("Classes, one per line", value="\n".join(trained_classes), key=f"classes-{record['id']}")
if st.button("Export with these classes"):
    wanted = [line.strip() for line in names_text.splitlines() if line.strip()]
    with st.spinner("Computing the text features of the classes with the learned prompts..."):
        try:
            changed = export_with_classes(path.parent, wanted)
        except UserError as error:
            st.error(str(error))
            st.stop()
    st.success(f"{len(wanted)} classes: {', '.join(wanted)}")
    st.download_button(
        "Download the classifier with these classes",
        changed.read_bytes(),
        file_name=file_name.replace(".safetensors", "-other-classes.safetensors"),
        mime="application/octet-stream",
    )
st.subheader("Use it in Python")
st.code(
    f"""from promptlab import Classifier

classifier = Classifier.load("{file_name}")
for prediction in classifier.predict(["photo1.jpg", "photo2.jpg"], top_k=3):
    print(prediction.label, prediction.probability, prediction.top_k)""",
    language="python",
)
st.subheader("Or from the command line, or as an HTTP endpoint")
st.code(
    f"""promptlab classify --classifier {file_name} photo1.jpg photos/ -o predictions.csv
promptlab serve --classifier {file_name} --port 8000     # POST /predict on 127.0.0.1
curl -F image=@photo1.jpg http://127.0.0.1:8000/predict""",
    language="bash",
)
st.subheader("Without PyTorch (the ONNX file)")
st.code(
    f"""# needs only onnxruntime, numpy and pillow, and promptlab's wheel without its dependencies:
# pip install onnxruntime numpy pillow && pip install --no-deps promptlab_clip-*.whl
# (the distribution is promptlab-clip; build the wheel with `pip wheel --no-deps -w dist .`)
from promptlab import OnnxClassifier

classifier = OnnxClassifier("{file_name.replace(".safetensors", ".onnx")}")
print(classifier.predict(["photo1.jpg"], top_k=3)[0])""",
    language="python",
)
