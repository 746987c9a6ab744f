"""What every page shares: settings, read-only MongoDB and Redis handles, run colors, errors.

Clients are cached with ``st.cache_resource`` (one per address for the whole server, never
pickled). ``st.cache_data`` is not used anywhere: it stores values pickled, and nothing the
dashboard reads from a database or a file is ever unpickled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
import streamlit as st
from pymongo import MongoClient
from pymongo.database import Database

from dashboard import sources
from dashboard.compare import assign_colors
from dashboard.errors import DashboardError

STALE_KEY = "stale_after_s"
COLORS_KEY = "run_colors"
SELECTED_RUN_KEY = "selected_run"
COMPARE_KEY = "compare_ids"


@dataclass(frozen=True)
class PageContext:
    """Handles a page reads through (all read-only)."""

    settings: sources.Settings
    client: MongoClient
    db: Database
    redis: Any
    stale_after_s: float


@st.cache_resource(show_spinner=False, max_entries=32)
def _mongo(uri: str) -> MongoClient:
    return sources.open_mongo(uri)


@st.cache_resource(show_spinner=False, max_entries=32)
def _redis(url: str):
    return sources.open_redis(url)


def page_context() -> PageContext:
    """Settings from the environment (as ``eegfs`` reads them) and the cached clients."""
    settings = sources.load_settings()
    client = _mongo(settings.mongo_uri)
    return PageContext(
        settings=settings,
        client=client,
        db=sources.tracking_db(client, settings),
        redis=_redis(settings.redis_url),
        stale_after_s=float(st.session_state.get(STALE_KEY, sources.DEFAULT_STALE_AFTER_S)),
    )


def run_colors(run_ids: Sequence[str]) -> dict[str, str]:
    """Each run's color, kept for the whole session (so a run looks the same on every page)."""
    colors = assign_colors(list(run_ids), st.session_state.get(COLORS_KEY, {}))
    st.session_state[COLORS_KEY] = colors
    return colors


def show_page(title: str, sections: Sequence[Callable[[PageContext], None]]) -> None:
    """Draw a page: its title, then each section, with errors shown as messages.

    A section that fails with a :class:`DashboardError`, a feature-table error or a MongoDB
    error shows the message (addresses masked) and the next section still draws.
    """
    st.title(title)
    ctx = page_context()
    _sidebar(ctx)
    for section in sections:
        try:
            section(ctx)
        except (DashboardError, sources.PipelineError) as exc:
            st.error(sources.mask_uri(str(exc)))
        except pymongo.errors.PyMongoError as exc:
            st.error(mongo_error_text(ctx, exc))


def mongo_error_text(ctx: PageContext, exc: Exception) -> str:
    return (
        f"MongoDB at {sources.mask_uri(ctx.settings.mongo_uri)} did not answer "
        f"({type(exc).__name__}). Start it with `eegfs services up`, or set MONGO_URI."
    )


def _sidebar(ctx: PageContext) -> None:
    with st.sidebar:
        st.caption(
            f"MongoDB `{sources.mask_uri(ctx.settings.mongo_uri)}` database "
            f"`{ctx.settings.mongo_db}`  \nRedis `{sources.mask_uri(ctx.settings.redis_url)}`"
        )
        st.number_input(
            "stale after (s without heartbeat)",
            min_value=10,
            value=int(st.session_state.get(STALE_KEY, sources.DEFAULT_STALE_AFTER_S)),
            step=60,
            key=STALE_KEY,
            help="A run marked running whose last heartbeat is older than this shows as stale.",
        )


def format_duration(seconds: float | None) -> str:
    """``3h 02m``, ``4m 05s``, ``12s``; empty for None."""
    if seconds is None or seconds != seconds:  # None or NaN
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_time(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
