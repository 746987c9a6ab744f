"""Services page: Redis and MongoDB health (passwords masked), the online-store marker,
tracking writes spooled while MongoDB was away, the workers (heartbeats) and the job queue."""

from __future__ import annotations

import streamlit as st

from dashboard import features, health, work
from dashboard.ui.context import PageContext, format_time, show_page


def redis_section(ctx: PageContext) -> None:
    info = health.redis_health(ctx.redis, ctx.settings.redis_url)
    st.markdown(f"#### Redis `{info['address']}`")
    if not info["answering"]:
        st.error(f"does not answer: {info['error']}. Start it with `eegfs services up`.")
        return
    cols = st.columns(3)
    cols[0].metric("version", info["version"])
    cols[1].metric("memory", info["used_memory"], help=f"peak {info['used_memory_peak']}")
    cols[2].metric("uptime", f"{int(info['uptime_s'] or 0) // 60} min")
    bound = "" if info["complete"] else f" (scan stopped at {info['scanned']:,}: lower bounds)"
    st.caption(f"Keys by prefix, counted with SCAN{bound}:")
    st.dataframe(info["keys"], hide_index=True)


def mongo_section(ctx: PageContext) -> None:
    info = health.mongo_health(ctx.client, ctx.settings.mongo_uri, ctx.settings.mongo_db)
    st.markdown(f"#### MongoDB `{info['address']}` database `{info['database']}`")
    if not info["answering"]:
        st.error(f"does not answer: {info['error']}. Start it with `eegfs services up`.")
        return
    cols = st.columns(3)
    cols[0].metric("version", info["version"])
    cols[1].metric(
        "resident memory", "-" if info["resident_mb"] is None else f"{info['resident_mb']:.0f} MB"
    )
    cols[2].metric("replica set", info["replica_set"] or "none")
    st.dataframe(info["collections"], hide_index=True)


def marker_section(ctx: PageContext) -> None:
    st.markdown("#### Online-store marker")
    try:
        markers = features.online_markers(ctx.redis)
    except Exception as exc:  # noqa: BLE001 - Redis away is reported above
        st.caption(f"unknown: Redis does not answer ({type(exc).__name__})")
        return
    if not markers:
        st.caption("None: nothing materialized into this Redis (`eegfs features materialize`).")
        return
    for marker in markers:
        st.json({k: v for k, v in marker.items() if k != "nonce"}, expanded=False)


def spool_section(ctx: PageContext) -> None:
    frame = health.spool_frame(ctx.settings.data_dir)
    st.markdown("#### Tracking writes not yet in MongoDB")
    if frame.empty:
        st.caption("None: every tracking write reached MongoDB.")
        return
    waiting = frame[frame["writer_running"] != True]  # noqa: E712 - None means another host
    st.warning(
        f"{int(frame['records'].sum()):,} spooled writes in {len(frame)} file(s); "
        f"{len(waiting)} without a running writer: replay them with `eegfs runs sync`."
    )
    st.dataframe(frame.assign(modified=frame["modified"].map(format_time)), hide_index=True)


def workers_section(ctx: PageContext) -> None:
    st.markdown("#### Workers")
    try:
        frame = work.workers_frame(ctx.redis, ctx.settings)
    except Exception as exc:  # noqa: BLE001 - Redis away is reported above
        st.caption(f"unknown: Redis does not answer ({type(exc).__name__})")
        return
    if frame.empty:
        st.caption("No worker has started on this Redis (`eegfs worker`, on any machine).")
        return
    lost = int((frame["state"] == "lost").sum())
    st.caption(
        f"{len(frame) - lost} live, {lost} lost (no heartbeat within its interval; their jobs "
        "go back to the queue)."
    )
    st.dataframe(frame, hide_index=True)


def jobs_section(ctx: PageContext) -> None:
    st.markdown("#### Job queue")
    try:
        frame = work.jobs_frame(ctx.redis, ctx.settings, limit=JOBS_SHOWN)
    except Exception as exc:  # noqa: BLE001 - Redis away is reported above
        st.caption(f"unknown: Redis does not answer ({type(exc).__name__})")
        return
    if frame.empty:
        st.caption("No job submitted (`eegfs jobs submit train ...`).")
        return
    counts = ", ".join(f"{n} {state}" for state, n in work.job_state_counts(frame).items())
    st.caption(
        f"The newest {len(frame)} jobs: {counts}. Change them with `eegfs jobs cancel|retry`."
    )
    shown = frame.assign(run="run?run=" + frame["experiment"].fillna(""))
    st.dataframe(
        shown,
        hide_index=True,
        column_config={"run": st.column_config.LinkColumn("run", display_text="open")},
    )


#: Jobs listed on the page (newest first).
JOBS_SHOWN = 50

SECTIONS = (
    redis_section,
    mongo_section,
    marker_section,
    spool_section,
    workers_section,
    jobs_section,
)


def render() -> None:
    show_page("Services", SECTIONS)
