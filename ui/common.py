"""Helpers shared by the app's pages: the workspace, the open project, run pickers and messages."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from promptlab.methods._contract import Bars, Panel, Table, Text
from promptlab.workspace.project import Project, UploadReport, Workspace
from promptlab.workspace.run_record import CLASSIFIER_FILE
from promptlab.workspace.runs import list_runs

WORKSPACE_ENV = "PROMPTLAB_WORKSPACE"


def workspace() -> Workspace:
    """The workspace folder: ``$PROMPTLAB_WORKSPACE`` or ``~/promptlab-workspace``."""
    return Workspace(os.environ.get(WORKSPACE_ENV) or Path.home() / "promptlab-workspace")


def current_project() -> Project | None:
    """The open project: kept in the session and in the URL (so a browser refresh keeps it)."""
    name = st.session_state.get("project") or st.query_params.get("project")
    if name and name in workspace().projects():
        return workspace().open(name)
    return None


def open_project(name: str) -> None:
    st.session_state["project"] = name
    st.query_params["project"] = name


def require_project() -> Project:
    """The open project, or a hint to pick one and an end to the page."""
    project = current_project()
    if project is None:
        st.info("Open or create a project on the **Projects** page first.")
        st.stop()
    return project


def require_runs(project: Project) -> list[dict]:
    """The project's runs, newest first, or a hint to train one and an end to the page."""
    runs = list_runs(project)
    if not runs:
        st.info("No runs yet: train one on the **Train** page.")
        st.stop()
    return runs


def pick_finished_classifier(project: Project) -> tuple[dict, Path]:
    """A select box of the finished runs (newest first) -> (run record, classifier file), or a hint and
    an end to the page when none has finished."""
    runs = [r for r in list_runs(project) if r.get("status") == "finished"]
    if not runs:
        st.info("No finished run yet: train one on the **Train** page.")
        st.stop()

    def describe(record: dict) -> str:
        accuracy = record.get("accuracy")
        shown = f"{accuracy:.1%}" if isinstance(accuracy, float) else "no test images"
        return f"{record['id']} · {record.get('backbone')} · {shown}"

    record = st.selectbox("Run", runs, format_func=describe)
    return record, project.runs_dir / record["id"] / CLASSIFIER_FILE


def show_upload_report(report: UploadReport) -> None:
    """One line per outcome: stored, duplicates skipped, and each rejected file with its reason."""
    if report.added:
        st.success(f"Added {len(report.added)} image(s).")
    if report.duplicates:
        st.info(f"Skipped {len(report.duplicates)} duplicate(s) already stored: {', '.join(report.duplicates[:5])}.")
    for _, reason in report.rejected:
        st.error(reason)


def show_panels(panels: list[Panel]) -> None:
    """Draws what a method shows of itself on the Inspect page (see promptlab.methods._contract)."""
    for panel in panels:
        if panel.title:
            st.subheader(panel.title)
        if isinstance(panel, Bars):
            st.bar_chart(panel.values, horizontal=True, y_label=panel.axis)
        elif isinstance(panel, Table):
            if panel.caption:
                st.write(panel.caption)
            st.dataframe(panel.rows, hide_index=True)
            continue
        elif isinstance(panel, Text) and panel.text:
            st.write(panel.text)
            if panel.warning:
                st.warning(panel.warning)
        if panel.caption:
            st.caption(panel.caption)


def flash(message: str, kind: str = "success") -> None:
    """Shows ``message`` after the next rerun (for actions that rerun the page)."""
    st.session_state.setdefault("flash", []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop("flash", []):
        getattr(st, kind)(message)
