"""Try it: classify an uploaded or camera image with a finished run's classifier."""

import streamlit as st
from common import pick_finished_classifier, require_project

from promptlab.classifier import Classifier
from promptlab.classifier_file import ClassifierFileError
from promptlab.data.images import ImageLoadError, decode_image_bytes
from promptlab.workspace.project import IMAGE_UPLOAD_TYPES


@st.cache_resource(max_entries=3)
def load_classifier(path: str, modified: float) -> Classifier:  # modified: reload when the file changes
    return Classifier.load(path, device="cpu")


project = require_project()
st.title(f"Try it · {project.name}")
record, path = pick_finished_classifier(project)
try:
    classifier = load_classifier(str(path), path.stat().st_mtime)
except (ClassifierFileError, OSError) as error:
    st.error(str(error))
    st.stop()

source = st.radio("Image from", ["Upload", "Camera"], horizontal=True)
image_file = (
    st.file_uploader("An image to classify", type=IMAGE_UPLOAD_TYPES)
    if source == "Upload"
    else st.camera_input("Take a photo")
)
if image_file is not None:
    try:
        image, _ = decode_image_bytes(image_file.getvalue(), image_file.name)
    except ImageLoadError as error:
        st.error(str(error))
        st.stop()
    (prediction,) = classifier.predict(image, top_k=5)
    left, right = st.columns([1, 2])
    left.image(image, caption=image_file.name, width="stretch")
    right.subheader(f"{prediction.label} · {prediction.probability:.0%}")
    right.bar_chart(dict(prediction.top_k), horizontal=True, y_label="probability")
