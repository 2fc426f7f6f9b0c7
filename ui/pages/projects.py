"""Projects: create one, or open an existing one."""

import streamlit as st
from common import current_project, flash, open_project, show_flashes, workspace

from promptlab.workspace.project import ProjectError
from promptlab.workspace.runs import list_runs

st.title("Projects")
st.write(
    "A project is a set of classes with a few example images each (or only class names and unlabelled "
    "images). promptlab learns a classifier for them on top of a frozen CLIP model."
)
show_flashes()

with st.form("create", clear_on_submit=True):
    name = st.text_input("New project name", placeholder="e.g. my pets")
    if st.form_submit_button("Create project", type="primary"):
        try:
            project = workspace().create(name)
        except (ProjectError, OSError, RuntimeError) as error:  # RuntimeError: DVC could not start
            st.error(str(error))
        else:
            open_project(project.name)
            flash(f"Created project {project.name!r}. Add classes and images on the Data page.")
            st.rerun()

open_project = current_project()
rows = []
for name in workspace().projects():
    project = workspace().open(name)
    counts = project.image_counts()
    rows.append(
        {
            "project": name,
            "classes": len(counts),
            "labelled images": sum(counts.values()),
            "unlabelled images": len(project.images(None)),
            "runs": len(list_runs(project)),
        }
    )
if rows:
    st.subheader("Your projects")
    st.dataframe(rows, hide_index=True, width="stretch")
    names = [row["project"] for row in rows]
    chosen = st.selectbox("Open project", names, index=names.index(open_project.name) if open_project else 0)
    if st.button("Open"):
        open_project(chosen)
        st.switch_page("pages/data.py")
else:
    st.info("No projects yet: create one above.")
