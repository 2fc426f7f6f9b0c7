"""promptlab's Streamlit app: ``streamlit run ui/app.py``.

A thin layer over :mod:`promptlab.workspace`: every page reads and writes a project folder through
that tested API, and training runs in a background process (see :mod:`promptlab.workspace.worker`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).parent))  # the pages import common.py

from common import current_project, open_project, workspace

st.set_page_config(page_title="promptlab", page_icon=":material/science:", layout="wide")

pages = [
    st.Page("pages/projects.py", title="Projects", icon=":material/folder:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/inspect_run.py", title="Inspect", icon=":material/search_insights:"),
    st.Page("pages/try_it.py", title="Try it", icon=":material/touch_app:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_chart:"),
]
navigation = st.navigation(pages)

with st.sidebar:
    names = workspace().projects()
    project = current_project()
    if names:
        chosen = st.selectbox(
            "Project", names, index=names.index(project.name) if project else None, placeholder="Pick a project"
        )
        if chosen and (project is None or chosen != project.name):
            open_project(chosen)
            st.rerun()
        elif project is not None:
            open_project(project.name)  # page switches drop the URL's query parameters
    st.caption(f"Workspace: `{workspace().root}`")

navigation.run()
