"""Runs: every run of the project in one table, to compare and pick the best."""

import streamlit as st
from common import require_project, require_runs

from promptlab.workspace.results import method_label, run_epochs, train_image_count

project = require_project()
st.title(f"Runs · {project.name}")
runs = require_runs(project)
rows = []
for record in runs:
    run_dir = project.runs_dir / record["id"]
    rows.append(
        {
            "run": record["id"],
            "method": method_label(record.get("method")),
            "backbone": record.get("backbone"),
            "epochs": run_epochs(run_dir, record.get("method")),
            "status": record.get("status"),
            "accuracy": record.get("accuracy"),
            "zero-shot": record.get("zero_shot_accuracy"),
            "training images": train_image_count(run_dir, record.get("method")),
            "held-out images": record.get("num_test"),
            "date": record.get("created", "").replace("T", " ")[:16],  # minutes, UTC
            "data version": (record.get("data_version") or "").removeprefix("dvc:")[:12],
        }
    )
st.dataframe(
    rows,
    hide_index=True,
    width="stretch",
    column_config={  # narrow columns: the whole table fits a laptop's screen
        "run": st.column_config.TextColumn(width="medium"),
        "accuracy": st.column_config.ProgressColumn(
            "accuracy", format="percent", min_value=0, max_value=1, width="small"
        ),
        "zero-shot": st.column_config.NumberColumn(
            "zero-shot", format="percent", help="Zero-shot CLIP on the same held-out images", width="small"
        ),
        "epochs": st.column_config.NumberColumn(width="small"),
        "training images": st.column_config.NumberColumn("train", help="Training images", width="small"),
        "held-out images": st.column_config.NumberColumn("held out", help="Held-out images", width="small"),
        "date": st.column_config.TextColumn("date (UTC)"),
        "data version": st.column_config.TextColumn("data", help="The DVC version of the project's images"),
    },
)
best = max((r for r in runs if r.get("accuracy") is not None), key=lambda r: r["accuracy"], default=None)
if best:
    st.success(f"Best so far: {best['id']} ({method_label(best['method'])}) with {best['accuracy']:.1%}.")
