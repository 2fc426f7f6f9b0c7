"""Runs: every run of the project in one table, to compare and pick the best."""

import streamlit as st
from common import require_project

from promptlab.workspace.results import run_results
from promptlab.workspace.runs import METHODS, list_runs

project = require_project()
st.title(f"Runs · {project.name}")
runs = list_runs(project)
if not runs:
    st.info("No runs yet: train one on the **Train** page.")
    st.stop()
rows = []
for record in runs:
    results = run_results(project.runs_dir / record["id"])
    settings = results.settings
    rows.append(
        {
            "run": record["id"],
            "method": METHODS.get(record.get("method"), record.get("method")),
            "backbone": record.get("backbone"),
            "epochs": settings.get("epochs") if record.get("method") != "zeroshot" else None,
            "status": record.get("status"),
            "accuracy": record.get("accuracy"),
            "zero-shot": record.get("zero_shot_accuracy"),
            "training images": results.train_images if record.get("method") in ("coop", "mocoop") else 0,
            "held-out images": record.get("num_test"),
            "date": record.get("created", "").replace("T", " ").replace("+00:00", " UTC"),
            "data version": (record.get("data_version") or "").removeprefix("dvc:")[:12],
        }
    )
st.dataframe(
    rows,
    hide_index=True,
    width="stretch",
    column_config={
        "accuracy": st.column_config.ProgressColumn("accuracy", format="percent", min_value=0, max_value=1),
        "zero-shot": st.column_config.NumberColumn("zero-shot on the same images", format="percent"),
    },
)
best = max((r for r in runs if r.get("accuracy") is not None), key=lambda r: r["accuracy"], default=None)
if best:
    st.success(f"Best so far: {best['id']} ({METHODS[best['method']]}) with {best['accuracy']:.1%}.")
