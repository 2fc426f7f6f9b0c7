"""Try it: classify an uploaded or camera image with a finished run's classifier."""

import streamlit as st
from common import pick_finished_classifier, require_project

from promptlab.data.images import ImageLoadError, decode_image_bytes
from promptlab.deploy.classifier import Classifier
from promptlab.deploy.classifier_file import ClassifierFileError
from promptlab.deploy.native_stderr import decoder_messages_to
from promptlab.deploy.prediction import REJECTION_RULES, UNFAMILIAR
from promptlab.workspace.project import DECODER_LOG_FILE, IMAGE_UPLOAD_TYPES
from promptlab.workspace.run_record import CHANGED_CLASSIFIER_FILE


@st.cache_resource(max_entries=3)
def load_classifier(path: str, modified: float) -> Classifier:  # modified: reload when the file changes
    return Classifier.load(path, device="cpu")


project = require_project()
st.title(f"Try it · {project.name}")
record, path = pick_finished_classifier(project)
changed = path.parent / CHANGED_CLASSIFIER_FILE
if changed.is_file() and st.toggle("With the classes set on the Export page", key=f"changed-{record['id']}"):
    path = changed
try:
    classifier = load_classifier(str(path), path.stat().st_mtime)
except (ClassifierFileError, OSError) as error:
    st.error(str(error))
    st.stop()

reject_below = st.slider(
    'Answer "none of these" below',
    min_value=0.0,
    max_value=0.95,
    value=float(classifier.reject_below or 0.0),
    step=0.05,
    format="%.2f",
    help="When the best class's calibrated probability is below this, the answer is 'none of these' "
    "(0: always name a class). Export and `promptlab serve` take the same threshold as --reject_below.",
)
unfamiliar_below = None
if classifier.unfamiliar_below is not None:
    unfamiliar_below = st.slider(
        'Answer "none of these" to images unlike the training images, below familiarity',
        min_value=0.0,
        max_value=2.0,
        value=round(classifier.unfamiliar_below, 2),
        step=0.01,
        format="%.2f",
        help="Familiarity is how much an image looks like the training images: the cosine similarity of its "
        "features to the nearest class's mean plus to the nearest training image (2: identical). The default "
        "was fitted when the run was tested, to keep 95% of images of the known classes; unknown things and "
        "blank or noisy pictures score lower. 0 turns it off. `promptlab classify` and `serve` take it as "
        "--unfamiliar_below.",
    )
else:
    st.caption(
        "This classifier was exported without a familiarity reference, so only the probability threshold "
        'answers "none of these"; test and export the run again to add one.'
    )
source = st.radio("Image from", ["Upload", "Camera"], horizontal=True)
image_file = (
    st.file_uploader("An image to classify", type=IMAGE_UPLOAD_TYPES)
    if source == "Upload"
    else st.camera_input("Take a photo")
)
if image_file is not None:
    try:
        with decoder_messages_to(project.path / DECODER_LOG_FILE):  # libtiff's own prints: a file, not the terminal
            image, _ = decode_image_bytes(image_file.getvalue(), image_file.name)
    except ImageLoadError as error:
        st.error(str(error))
        st.stop()
    (prediction,) = classifier.predict(image, top_k=5, reject_below=reject_below, unfamiliar_below=unfamiliar_below)
    left, right = st.columns([1, 2])
    left.image(image, caption=image_file.name, width="stretch")
    if prediction.none_of_these:
        right.subheader("None of these")
        reason = REJECTION_RULES[prediction.rejected_by or ""]
        if prediction.rejected_by == UNFAMILIAR:
            reason += f" (familiarity {prediction.familiarity:.2f}, below {unfamiliar_below:.2f})"
        else:
            reason += f" (best {prediction.probability:.0%}, below {reject_below:.0%})"
        right.write(
            f"Why: {reason[0].upper()}{reason[1:]}. Best guess: {prediction.label}, {prediction.probability:.0%}."
        )
    else:
        right.subheader(f"{prediction.label} · {prediction.probability:.0%}")
    right.bar_chart(dict(prediction.top_k), horizontal=True, y_label="probability")
