"""Export: download a run's classifier file, with code that loads and uses it."""

import streamlit as st
from common import pick_finished_classifier, require_project

project = require_project()
st.title(f"Export · {project.name}")
record, path = pick_finished_classifier(project)
file_name = f"{project.name.replace(' ', '_')}-{record['id']}.safetensors"
size_mb = path.stat().st_size / 2**20
st.write(
    f"One file ({size_mb:.1f} MB) holds the classifier: class names, the learned class features, preprocessing "
    f"and the reference to `{record.get('backbone')}` (or its image encoder's weights, when they cannot be "
    "downloaded). It is a safetensors file: loading it never runs code."
)
st.download_button(
    "Download the classifier", path.read_bytes(), file_name=file_name, type="primary", mime="application/octet-stream"
)
st.subheader("Use it in Python")
st.code(
    f"""from promptlab.classifier import Classifier

classifier = Classifier.load("{file_name}")
for prediction in classifier.predict(["photo1.jpg", "photo2.jpg"], top_k=3):
    print(prediction.label, prediction.probability, prediction.top_k)""",
    language="python",
)
st.subheader("Or from the command line")
st.code(f"pip install promptlab\npromptlab classify --classifier {file_name} photo1.jpg photos/", language="bash")
