"""Data: classes, their images (upload or camera), the unlabelled pool and class descriptions."""

from pathlib import Path

import streamlit as st
from common import flash, require_project, show_flashes, show_upload_report, workspace

from promptlab.errors import UserError
from promptlab.methods import registered_methods
from promptlab.workspace.labelling import put_aside, ranking_classifier, suggest_labels
from promptlab.workspace.project import IMAGE_UPLOAD_TYPES, Project, ProjectError
from promptlab.workspace.runs import active_run, list_runs

THUMBNAILS = 12

project = require_project()
st.title(f"Data · {project.name}")
show_flashes()
if active_run(project):
    st.info("A run is training on these images: wait for it before removing any (new uploads go to the next run).")
uploads_round = st.session_state.setdefault("uploads_round", 0)  # a new key empties the uploaders


def store_uploads(class_name: str | None, files) -> None:
    try:
        report = project.add_images(class_name, [(f.name, f.getvalue()) for f in files])
    except OSError as error:  # disk full, permissions: the files stored before it are kept
        st.error(f"Could not store the uploads in {project.data_dir}: {error}. Free some disk space and try again.")
        return
    st.session_state["last_report"] = report
    st.session_state["uploads_round"] += 1
    st.rerun()


if "last_report" in st.session_state:
    show_upload_report(st.session_state.pop("last_report"))


def thumbnails(project: Project, class_name: str | None, key: str) -> None:
    images = project.images(class_name)
    show_all = len(images) > THUMBNAILS and st.toggle(f"Show all {len(images)}", key=f"all-{key}")
    shown = images if show_all else images[:THUMBNAILS]
    columns = st.columns(6)
    for i, path in enumerate(shown):
        with columns[i % 6]:
            st.image(str(path), width="stretch")
            if st.button("Remove", key=f"rm-{key}-{path.name}"):
                project.remove_image(path)
                flash("Removed 1 image.")
                st.rerun()


with st.form("add-class", clear_on_submit=True):
    new_class = st.text_input("New class", placeholder="e.g. golden retriever")
    if st.form_submit_button("Add class"):
        try:
            project.add_class(new_class)
            flash(f"Added class {new_class.strip()!r}.")
            st.rerun()
        except ProjectError as error:
            st.error(str(error))

counts = project.image_counts()
if not counts:
    st.info("Add at least two classes, then upload a few images to each (10 or more works best).")
elif len(counts) >= 2 and min(counts.values()) >= 2:
    st.page_link(
        "pages/train.py",
        label=f"Next: train a classifier on these {sum(counts.values())} images",
        icon=":material/model_training:",
    )


def pending(key: str) -> bool:
    """True while an uploader holds files not yet added: its expander must stay open across reruns
    (an expander whose place on the page moved, say after an upload report, opens closed)."""
    return bool(st.session_state.get(key))


for class_name, count in counts.items():
    upload_key = f"upload-{class_name}-{uploads_round}"
    with st.expander(f"**{class_name}** · {count} image(s)", expanded=count < 2 or pending(upload_key)):
        if count == 0:
            st.warning("This class has no images yet.")
        elif count == 1:
            st.warning("One image is not enough to train and measure; add at least one more.")
        files = st.file_uploader(
            f"Upload images of {class_name}",
            type=IMAGE_UPLOAD_TYPES,
            accept_multiple_files=True,
            key=upload_key,
        )
        if files and st.button(f"Add {len(files)} file(s)", key=f"add-{class_name}", type="primary"):
            store_uploads(class_name, files)
        if st.toggle("Use the camera", key=f"cam-on-{class_name}"):
            photo = st.camera_input("Take a photo", key=f"cam-{class_name}-{uploads_round}")
            if photo is not None:
                store_uploads(class_name, [photo])
        thumbnails(project, class_name, class_name)
        left, right = st.columns(2)
        with left:
            renamed = st.text_input("Rename to", key=f"rename-{class_name}")
            if st.button("Rename", key=f"rename-btn-{class_name}") and renamed:
                try:
                    project.rename_class(class_name, renamed)
                    flash(f"Renamed {class_name!r} to {renamed.strip()!r}.")
                    st.rerun()
                except ProjectError as error:
                    st.error(str(error))
        with right:
            sure = st.checkbox(f"Yes, delete {class_name!r} and its {count} image(s)", key=f"sure-{class_name}")
            if st.button("Delete class", key=f"delete-{class_name}", disabled=not sure):
                project.delete_class(class_name)
                flash(f"Deleted class {class_name!r}.")
                st.rerun()

SUGGESTIONS = 6


@st.cache_resource(show_spinner="Loading the classifier that ranks the pool...", max_entries=4)
def cached_ranking_classifier(project_path: str, classes: tuple[str, ...], finished: tuple[str, ...]):
    """The ranking classifier, loaded again only when the classes or the finished runs change."""
    return ranking_classifier(workspace().open(Path(project_path).name))


def label_these_next(project: Project, classes: list[str]) -> None:
    """The pool images worth labelling first, each with the classifier's guess and one-click answers."""
    st.subheader("Label these next")
    if len(classes) < 2:
        st.info("Add at least two classes: promptlab then suggests which unlabelled images to label first.")
        return
    if not project.images(None):
        st.info(
            "Upload unlabelled images to the pool (below): promptlab then suggests the ones worth labelling "
            "first, those the classifier is least sure of, spread out so that they are not near-duplicates."
        )
        return
    finished = tuple(r["id"] for r in list_runs(project) if r.get("status") == "finished")
    try:
        classifier, which = cached_ranking_classifier(str(project.path), tuple(classes), finished)
    except UserError as error:
        st.error(str(error))
        return
    memo = st.session_state.setdefault(f"encoded-{project.path}-{classes}-{finished}", {})
    with st.spinner("Ranking the unlabelled pool..."):
        suggestions = suggest_labels(project, classifier, SUGGESTIONS, memo)
    if not suggestions:
        st.info("Every image of the pool is labelled or set aside.")
        return
    st.caption(
        f"Ranked by {which}: the images it is least sure of, far from those labelled already and from each other. "
        "Each label you give here moves the image from the pool into its class."
    )
    columns = st.columns(3)
    for i, suggestion in enumerate(suggestions):
        with columns[i % 3], st.container(border=True):
            name = suggestion.path.name
            st.image(str(suggestion.path), width="stretch")
            st.caption(f"Guess: **{suggestion.guess}** ({suggestion.probability:.0%})")
            try:
                if st.button(f"It is {suggestion.guess}", key=f"yes-{name}", type="primary"):
                    project.label_image(suggestion.path, suggestion.guess)
                    flash(f"Labelled one image {suggestion.guess!r}.")
                    st.rerun()
                others = [c for c in classes if c != suggestion.guess]
                other = st.selectbox(
                    "Another class", others, index=None, key=f"other-{name}", placeholder="Another class"
                )
                if other:
                    project.label_image(suggestion.path, other)
                    flash(f"Labelled one image {other!r}.")
                    st.rerun()
                left, right = st.columns(2)
                if left.button("None of these", key=f"none-{name}"):
                    put_aside(project, suggestion.path, "none_of_these")
                    st.rerun()
                if right.button("Skip", key=f"skip-{name}"):
                    put_aside(project, suggestion.path, "skipped")
                    st.rerun()
            except ProjectError as error:  # labelled from another tab meanwhile
                st.error(str(error))


label_these_next(project, list(counts))

label_free = " or ".join(m.label for m in registered_methods().values() if m.learns_from == "unlabelled")
st.subheader(f"Label-free training ({label_free})")
st.write(
    f"{label_free} needs no labelled images: only the class names, a pool of unlabelled images and, optionally, "
    "a few sentences describing each class."
)
with st.expander(
    f"Unlabelled pool · {len(project.images(None))} image(s)", expanded=pending(f"upload-pool-{uploads_round}")
):
    files = st.file_uploader(
        "Upload unlabelled images",
        type=IMAGE_UPLOAD_TYPES,
        accept_multiple_files=True,
        key=f"upload-pool-{uploads_round}",
    )
    if files and st.button(f"Add {len(files)} file(s) to the pool", type="primary"):
        store_uploads(None, files)
    thumbnails(project, None, "pool")
if counts:
    with st.expander("Class descriptions"), st.form("descriptions"):
        current = project.descriptions()
        edited = {
            name: st.text_area(f"{name} (one sentence per line)", "\n".join(current.get(name, [])), key=f"desc-{name}")
            for name in counts
        }
        if st.form_submit_button("Save descriptions"):
            project.set_descriptions({name: text.splitlines() for name, text in edited.items()})
            st.success("Saved the descriptions.")
