"""Run page: one run's record, lineage, curves (live while it runs), epochs, checkpoints, log.

While the run is running, the curves are drawn by a fragment that Streamlit reruns every
second without reloading the page: it reads the epochs and step points newer than the last
ones drawn from MongoDB, and the latest step from the Redis live state. With Redis away the
page says that live step updates are off and keeps following MongoDB.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, run_detail, runs, sources
from dashboard.metrics import best_nrmse
from dashboard.ui.context import (
    SELECTED_RUN_KEY,
    PageContext,
    format_duration,
    format_time,
    page_context,
    run_colors,
    show_page,
)

#: Seconds between two live refreshes of the curves of a running run.
LIVE_INTERVAL_S = 1.0
_DATA_KEY = "run_page_data"
_LIVE_KEY = "run_page_live"


def _choose_run(ctx: PageContext) -> str | None:
    recent = runs.recent_runs(ctx.db, limit=100)
    ids = [r["id"] for r in recent]
    labels = {r["id"]: f"{r['name']}  ·  {r['status']}  ·  {r['id']}" for r in recent}
    wanted = st.query_params.get("run") or st.session_state.get(SELECTED_RUN_KEY)
    if wanted and wanted not in ids:
        ids.insert(0, wanted)
        labels[wanted] = wanted
    if not ids:
        return None
    choice = st.selectbox(
        "run", ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get
    )
    st.session_state[SELECTED_RUN_KEY] = choice
    if st.query_params.get("run") != choice:
        st.query_params["run"] = choice
    return choice


def run_page(ctx: PageContext) -> None:
    """Pick a run, load its data once, then draw every section."""
    run_id = _choose_run(ctx)
    if run_id is None:
        st.info("No runs recorded yet: train one with `eegfs train` (or `make demo`).")
        return
    data = run_detail.run_page_data(ctx.db, ctx.redis, run_id, stale_after_s=ctx.stale_after_s)
    st.session_state[_DATA_KEY] = data
    st.session_state[_LIVE_KEY] = {
        "run_id": str(data["overview"]["_id"]),
        "epochs": data["epochs"],
        "steps": data["steps"],
        "live_steps": pd.DataFrame(columns=["step"]),
    }
    for section in RUN_SECTIONS:
        section(ctx, data)


def header(ctx: PageContext, data: dict[str, Any]) -> None:
    doc = data["overview"]
    started = doc.get("started_at")
    st.subheader(f"{doc.get('name')}  ({doc['status']})")
    if doc["status"] == "stale":
        st.warning(
            f"Marked running, but the last heartbeat was {format_time(doc.get('heartbeat'))}: "
            "the process probably died. Resume it with `eegfs train --resume "
            f"{doc['_id']}`."
        )
    st.caption(
        f"id `{doc['_id']}` · host {doc.get('host')} · started {format_time(started)}"
        + (f" · ended {format_time(doc.get('ended_at'))}" if doc.get("ended_at") else "")
        + (f" · tags {', '.join(doc.get('tags') or [])}" if doc.get("tags") else "")
    )
    if doc.get("error"):
        st.error(f"error: {doc['error']}")


def _progress(doc: dict[str, Any]) -> None:
    """Challenge, model, epochs, duration and best NRMSE (redrawn live while the run runs)."""
    now = dt.datetime.now(dt.UTC)
    end = doc.get("ended_at") or (now if doc["status"] == sources.RUNNING else doc.get("heartbeat"))
    started = doc.get("started_at")
    cols = st.columns(5)
    cols[0].metric("challenge", doc.get("challenge"))
    cols[1].metric("model", (doc.get("model") or {}).get("name") or "-")
    cols[2].metric("epochs", 0 if doc.get("last_epoch") is None else doc["last_epoch"] + 1)
    duration = format_duration((end - started).total_seconds()) if started and end else "-"
    cols[3].metric("duration", duration)
    nrmse = best_nrmse(doc)
    cols[4].metric("best val NRMSE", "-" if nrmse is None else f"{nrmse:.4f}")


def progress_and_curves(ctx: PageContext, data: dict[str, Any]) -> None:
    if data["overview"]["status"] == sources.RUNNING:
        _live_progress_and_curves()
    else:
        _progress(data["overview"])
        st.markdown("#### Curves")
        state = st.session_state[_LIVE_KEY]
        _draw_curves(state["run_id"], state["epochs"], state["steps"])


@st.fragment(run_every=LIVE_INTERVAL_S)
def _live_progress_and_curves() -> None:
    ctx = page_context()
    state = st.session_state.get(_LIVE_KEY)
    if state is None:
        return
    run_id = state["run_id"]
    progress = run_detail.run_progress(ctx.db, run_id, stale_after_s=ctx.stale_after_s)
    if progress is None:
        st.rerun()  # the run is gone (database restored or dropped): redraw the page
    overview = st.session_state[_DATA_KEY]["overview"]
    _progress({**overview, **progress})
    st.markdown("#### Curves")
    epochs, steps = state["epochs"], state["steps"]
    last_epoch = int(epochs["epoch"].max()) if len(epochs) else None
    new_epochs = run_detail.epochs_frame(ctx.db, run_id, after_epoch=last_epoch)
    if len(new_epochs):
        epochs = pd.concat([epochs, new_epochs], ignore_index=True)
    last_step = int(steps["step"].max()) if len(steps) else None
    new_steps = run_detail.steps_frame(ctx.db, run_id, after_step=last_step)
    if len(new_steps):
        steps = pd.concat([steps, new_steps], ignore_index=True)
    live = run_detail.live_state(ctx.redis, run_id)
    point = run_detail.live_step_point(live)
    live_steps = state["live_steps"]
    newest = int(steps["step"].max()) if len(steps) else -1
    if point is not None and point["step"] > max(newest, _max_step(live_steps)):
        live_steps = pd.concat([live_steps, pd.DataFrame([point])], ignore_index=True)
    live_steps = live_steps[live_steps["step"] > newest] if len(live_steps) else live_steps
    state.update(epochs=epochs, steps=steps, live_steps=live_steps)
    if live["available"]:
        st.caption(
            f"live · updated every {LIVE_INTERVAL_S:g} s · step {live.get('step')} · "
            f"epoch {live.get('epoch')} · last update {live.get('updated') or '-'}"
        )
    else:
        st.warning(
            f"Redis at {sources.mask_uri(ctx.settings.redis_url)} does not answer "
            f"({live['error']}): live step updates are off. Epochs still update from MongoDB."
        )
    drawn_steps = pd.concat([steps, live_steps], ignore_index=True) if len(live_steps) else steps
    _draw_curves(run_id, epochs, drawn_steps)
    if progress["status"] != sources.RUNNING:
        st.rerun()  # finished or stale: redraw the whole page (summary, checkpoints, log) once


def _max_step(frame: pd.DataFrame) -> int:
    return int(frame["step"].max()) if len(frame) else -1


def _draw_curves(run_id: str, epochs: pd.DataFrame, steps: pd.DataFrame) -> None:
    color = run_colors([run_id])[run_id]
    if len(epochs):
        st.plotly_chart(charts.epoch_curves_figure(epochs, color), key="epoch_curves")
    else:
        st.caption("No epoch finished yet.")
    if len(steps):
        st.plotly_chart(charts.step_curves_figure(steps, color), key="step_curves")
    with st.expander(f"Epochs ({len(epochs)})", expanded=False):
        st.dataframe(epochs, hide_index=True)


def lineage(ctx: PageContext, data: dict[str, Any]) -> None:
    doc = data["overview"]
    line = doc["lineage"]
    st.markdown("#### Lineage")
    cols = st.columns(3)
    cols[0].markdown(
        f"**feature snapshot** `{line.get('snapshot_id') or '-'}`  \n"
        f"service `{line.get('feature_service') or '-'}` ({line.get('feature_mode') or '-'})"
    )
    dirty = " (uncommitted changes)" if line.get("code_dirty") else ""
    cols[1].markdown(
        f"**code commit** `{line.get('code_commit') or '-'}`{dirty}  \n"
        f"branch `{line.get('code_branch') or '-'}`"
    )
    cols[2].markdown(f"**data files** {len(line['files'])}")
    if line["files"]:
        st.dataframe(pd.DataFrame(line["files"]), hide_index=True)


def configuration(ctx: PageContext, data: dict[str, Any]) -> None:
    doc = data["overview"]
    cols = st.columns(3)
    for col, name in zip(cols, ("config", "model", "data"), strict=True):
        with col.expander(name, expanded=name == "config"):
            st.json(doc.get(name) or {}, expanded=1)
    if doc.get("summary"):
        with st.expander("summary", expanded=True):
            st.json(doc["summary"])


def checkpoints(ctx: PageContext, data: dict[str, Any]) -> None:
    frame = data["checkpoints"]
    st.markdown(f"#### Checkpoints ({len(frame)})")
    if data["overview"]["status"] == sources.RUNNING:
        st.caption("As of the page load; checkpoints and the log refresh when the run ends.")
    if frame.empty:
        st.caption("No checkpoint recorded.")
        return
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "best": st.column_config.CheckboxColumn("best"),
            "size_bytes": st.column_config.NumberColumn("size (bytes)", format="%d"),
        },
    )
    best = frame[frame["best"]]
    if len(best):
        st.caption(
            f"Register the best one: `eegfs models register NAME {best['id'].iloc[0]} "
            "--alias candidate`"
        )


def log_tail(ctx: PageContext, data: dict[str, Any]) -> None:
    log = data["log"]
    label = f"Log (last {len(log['text']):,} of {log['total_chars']:,} characters)"
    with st.expander(label, expanded=False):
        st.code(log["text"] or "(no log stored yet: it is attached when the run ends)")
        if log.get("traceback"):
            st.code(log["traceback"], language="text")


RUN_SECTIONS = (
    header,
    progress_and_curves,
    lineage,
    configuration,
    checkpoints,
    log_tail,
)
SECTIONS = (run_page,)


def render() -> None:
    show_page("Run", SECTIONS)
