"""Models page: the registry (models, versions, aliases, metrics, lineage), read-only, with the
``eegfs models`` command for each change, and the predictions made with registered models."""

from __future__ import annotations

import streamlit as st

from dashboard import models
from dashboard.ui.context import PageContext, show_page


def registry(ctx: PageContext) -> None:
    frame = models.models_frame(ctx.db)
    if frame.empty:
        st.info(
            "No registered model yet. Register a run's best checkpoint with "
            "`eegfs models register NAME CHECKPOINT_ID --alias candidate` (the Run page shows "
            "the command with the id)."
        )
        return
    st.dataframe(frame, hide_index=True)
    name = st.selectbox("model", frame["name"].tolist())
    versions = models.versions_frame(ctx.db, name)
    st.markdown(f"#### Versions of {name}")
    shown = versions.assign(run="run?run=" + versions["run_id"].fillna(""))
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "run": st.column_config.LinkColumn(
                "run", display_text="open", help="the run this version came from"
            ),
            "size_bytes": st.column_config.NumberColumn("size (bytes)", format="%d"),
        },
    )
    version = st.selectbox("version", versions["version"].tolist()) if len(versions) else None
    st.markdown("#### Changes (the dashboard is read-only: run these in a terminal)")
    for what, command in models.change_commands(name, version).items():
        st.caption(what)
        st.code(command, language="bash")


def predictions(ctx: PageContext) -> None:
    st.markdown("#### Predictions")
    names = ["all models", *models.models_frame(ctx.db)["name"].tolist()]
    name = st.selectbox("predictions of", names, key="predictions_model")
    frame = models.predictions_frame(ctx.db, None if name == "all models" else name)
    if frame.empty:
        st.info(
            "No predictions recorded yet. `eegfs predict --model NAME@ALIAS --data FILE.h5` "
            "writes Parquet and records each run here (docs/predict.md)."
        )
        return
    st.caption(
        "Where each file's subject features came from: the model's feature snapshot, the online "
        "store, or pushed first (`eegfs features push`) because the store did not have them."
    )
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "windows_per_s": st.column_config.NumberColumn("windows/s", format="%.0f"),
            "subject_nrmse": st.column_config.NumberColumn("subject NRMSE", format="%.4f"),
        },
    )


SECTIONS = (registry, predictions)


def render() -> None:
    show_page("Models", SECTIONS)
