"""Run statuses, including ``stale``: a ``running`` run whose heartbeat is too old."""

from __future__ import annotations

import datetime as dt
from typing import Any

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"
STALE = "stale"
#: Statuses a run can be finished with.
FINAL_STATUSES = (COMPLETED, FAILED, STOPPED)
#: Statuses a query can filter on (``stale`` is computed, or stored by the SQLite migration).
ALL_STATUSES = (RUNNING, COMPLETED, FAILED, STOPPED, STALE)

DEFAULT_STALE_AFTER_S = 300.0


def stale_cutoff(now: dt.datetime, stale_after_s: float) -> dt.datetime:
    return now - dt.timedelta(seconds=stale_after_s)


def status_filter(status: str, now: dt.datetime, stale_after_s: float) -> dict[str, Any]:
    """MongoDB filter for runs *reported* with ``status``."""
    if status not in ALL_STATUSES:
        raise ValueError(
            f"unknown run status {status!r}; expected one of {', '.join(ALL_STATUSES)}"
        )
    cutoff = stale_cutoff(now, stale_after_s)
    if status == RUNNING:
        return {"status": RUNNING, "heartbeat": {"$gte": cutoff}}
    if status == STALE:
        return {
            "$or": [
                {"status": STALE},
                {"status": RUNNING, "$or": [{"heartbeat": {"$lt": cutoff}}, {"heartbeat": None}]},
            ]
        }
    return {"status": status}


def present(doc: dict[str, Any], now: dt.datetime, stale_after_s: float) -> dict[str, Any]:
    """``doc`` with ``status`` as reported: ``stale`` for a silent running run.

    The stored value is kept under ``stored_status`` when it differs.
    """
    if doc.get("status") == RUNNING:
        heartbeat = doc.get("heartbeat")
        if heartbeat is None or heartbeat < stale_cutoff(now, stale_after_s):
            doc = {**doc, "status": STALE, "stored_status": RUNNING}
    return doc
