"""Runs page: the experiments table with filters, server-side sorting and paging."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from dashboard import runs, sources
from dashboard.compare import MAX_RUNS, MIN_RUNS
from dashboard.ui.context import (
    COMPARE_KEY,
    SELECTED_RUN_KEY,
    PageContext,
    format_duration,
    show_page,
)

PAGE_KEY = "runs_page_number"
TABLE_KEY = "runs_table"
ALL = "all"
SORT_LABELS = {
    "started": "started",
    "best_nrmse": "best val NRMSE",
    "duration": "duration",
    "name": "name",
    "status": "status",
    "challenge": "challenge",
    "epochs": "epochs",
    "host": "host",
}


def _filters(ctx: PageContext) -> runs.RunQuery:
    cols = st.columns([1, 1, 1, 2, 1, 1])
    challenge = cols[0].selectbox("challenge", [ALL, 1, 2])
    status = cols[1].selectbox("status", [ALL, *sources.ALL_STATUSES])
    tag = cols[2].selectbox("tag", [ALL, *runs.tag_options(ctx.db)])
    text = cols[3].text_input("name or notes contains", "")
    started_from = cols[4].date_input("started from", value=None)
    started_to = cols[5].date_input("started until", value=None)
    cols = st.columns([2, 1, 1, 2, 1, 1])
    metric = cols[0].text_input(
        "metric", runs.NRMSE, help="best_nrmse (the table's column) or any metric name"
    )
    low = cols[1].number_input("metric ≥", value=None, format="%.4f")
    high = cols[2].number_input("metric ≤", value=None, format="%.4f")
    sort = cols[3].selectbox("sort by", list(SORT_LABELS), format_func=SORT_LABELS.get)
    descending = cols[4].toggle("descending", value=True)
    page_size = cols[5].selectbox("rows", [25, 50, 100, 200], index=1)
    return runs.RunQuery(
        challenge=None if challenge == ALL else int(challenge),
        status=None if status == ALL else status,
        tag=None if tag == ALL else tag,
        text=text.strip() or None,
        started_from=_day_start(started_from),
        started_to=_day_start(started_to, next_day=True),
        metric=metric.strip() or runs.NRMSE,
        metric_min=low,
        metric_max=high,
        sort=sort,
        descending=descending,
        page=max(0, int(st.session_state.get(PAGE_KEY, 1)) - 1),
        page_size=int(page_size),
    )


def _day_start(day: dt.date | None, *, next_day: bool = False) -> dt.datetime | None:
    if day is None:
        return None
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start + dt.timedelta(days=1) if next_day else start


def runs_table(ctx: PageContext) -> None:
    """Filters, one page of runs, and the actions on the selected rows."""
    try:
        query = _filters(ctx)
    except ValueError as exc:
        st.error(f"{exc}")
        return
    page = runs.runs_page(ctx.db, query, stale_after_s=ctx.stale_after_s)
    if page.page >= page.pages and page.total:  # the filters shrank the result: back to page 1
        st.session_state[PAGE_KEY] = 1
        st.rerun()
    if page.total == 0:
        st.info(
            "No runs match."
            if query != runs.RunQuery(page_size=query.page_size)
            else "No runs recorded yet: train one with `eegfs train` (or `make demo`)."
        )
        return
    table = page.rows.copy()
    table["duration"] = table["duration_s"].map(format_duration)
    table["open"] = "run?run=" + table["id"]
    shown = [
        "open",
        "name",
        "challenge",
        "model",
        "status",
        "started",
        "duration",
        "epochs",
        "best_nrmse",
        "nrmse_level",
        "tags",
        "host",
        "id",
    ]
    event = st.dataframe(
        table[shown],
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        key=TABLE_KEY,
        column_config={
            "open": st.column_config.LinkColumn("open", display_text="open", width="small"),
            "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
            "best_nrmse": st.column_config.NumberColumn("best val NRMSE", format="%.4f"),
            "nrmse_level": st.column_config.TextColumn("level", width="small"),
        },
    )
    cols = st.columns([2, 2, 2, 3])
    cols[0].number_input(
        f"page (of {page.pages})", min_value=1, max_value=page.pages, step=1, key=PAGE_KEY
    )
    cols[3].caption(
        f"{page.total:,} matching runs; rows {page.page * page.page_size + 1:,}-"
        f"{page.page * page.page_size + len(page.rows):,}. Sorted and paged by MongoDB."
    )
    selected = [table["id"].iloc[i] for i in event.selection.rows]
    _actions(cols[1], cols[2], selected)


def _actions(open_col, compare_col, selected: list[str]) -> None:
    if open_col.button("open selected run", disabled=len(selected) != 1):
        st.session_state[SELECTED_RUN_KEY] = selected[0]
        st.switch_page("run_page.py", query_params={"run": selected[0]})
    ok = MIN_RUNS <= len(selected) <= MAX_RUNS
    if compare_col.button(f"compare selected ({len(selected)})", disabled=not ok):
        st.session_state[COMPARE_KEY] = selected
        st.switch_page("compare_page.py", query_params={"runs": ",".join(selected)})
    if st.button("refresh"):
        st.rerun()


SECTIONS = (runs_table,)


def render() -> None:
    show_page("Runs", SECTIONS)
