"""Data of the Runs page: one page of the experiments table, filtered and sorted by MongoDB.

The page never loads every run: :func:`runs_page` sends one aggregation that matches, sorts,
skips and limits on the server and projects only the table's columns, plus one count. Statuses
are reported as the tracking package reports them (``stale`` for a running run whose last
heartbeat is older than the threshold).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pymongo.database import Database

from dashboard import sources
from dashboard.metrics import NRMSE_PATHS, best_nrmse, nrmse_expr, nrmse_level

#: The table's metric column, and the default metric of the range filter.
NRMSE = "best_nrmse"

#: Sort keys offered by the page: a stored field, or an expression computed on the server.
SORT_FIELDS = {
    "started": "started_at",
    "name": "name",
    "challenge": "challenge",
    "status": "status",
    "epochs": "last_epoch",
    "host": "host",
}
SORT_EXPRESSIONS = ("best_nrmse", "duration")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

#: Columns of the table, in order.
COLUMNS = (
    "id",
    "name",
    "challenge",
    "model",
    "status",
    "started",
    "duration_s",
    "epochs",
    "best_nrmse",
    "nrmse_level",
    "tags",
    "host",
)


def _duration_expr(now: dt.datetime) -> dict[str, Any]:
    """Seconds from start to end (or to the last heartbeat, or now, for a run without an end)."""
    end = {"$ifNull": ["$ended_at", "$heartbeat", now]}
    return {"$divide": [{"$subtract": [end, "$started_at"]}, 1000.0]}


def _metric_value_expr(metric: str) -> dict[str, Any]:
    return nrmse_expr() if metric == NRMSE else sources.metric_expr(metric)


@dataclass(frozen=True)
class RunQuery:
    """What the Runs page asks for: filters, sort order and page.

    Parameters
    ----------
    challenge, status, tag:
        Equality on the challenge (1 or 2), the reported status (``stale`` included), one tag.
    text:
        Case-insensitive substring of the name or the notes.
    started_from, started_to:
        Start time range, ``started_from <= started_at < started_to`` (aware datetimes).
    metric, metric_min, metric_max:
        Inclusive range on a run metric: ``best_nrmse`` (the table's column) or any metric
        name (the run's summary value, else its last epoch's).
    sort, descending:
        A key of :data:`SORT_FIELDS` or one of :data:`SORT_EXPRESSIONS`.
    page, page_size:
        0-based page number and rows per page (at most :data:`MAX_PAGE_SIZE`).
    """

    challenge: int | None = None
    status: str | None = None
    tag: str | None = None
    text: str | None = None
    started_from: dt.datetime | None = None
    started_to: dt.datetime | None = None
    metric: str = NRMSE
    metric_min: float | None = None
    metric_max: float | None = None
    sort: str = "started"
    descending: bool = True
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        if self.challenge is not None and self.challenge not in (1, 2):
            raise ValueError(f"challenge must be 1 or 2, got {self.challenge!r}")
        if self.status is not None and self.status not in sources.ALL_STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(sources.ALL_STATUSES)}, got {self.status!r}"
            )
        if self.sort not in SORT_FIELDS and self.sort not in SORT_EXPRESSIONS:
            known = ", ".join([*SORT_FIELDS, *SORT_EXPRESSIONS])
            raise ValueError(f"sort must be one of {known}, got {self.sort!r}")
        if self.page < 0:
            raise ValueError(f"page must be >= 0, got {self.page}")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {self.page_size}")
        if not re.fullmatch(r"[A-Za-z_][\w/\-]*", self.metric):
            raise ValueError(
                f"metric name {self.metric!r} is not a metric name (letters, digits, _ / -)"
            )
        for name in ("started_from", "started_to"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True)
class RunsPage:
    """One page of the runs table: ``rows`` (columns :data:`COLUMNS`) and how many match."""

    rows: pd.DataFrame
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


def build_match(
    query: RunQuery, now: dt.datetime, stale_after_s: float = sources.DEFAULT_STALE_AFTER_S
) -> dict[str, Any]:
    """The MongoDB filter of ``query`` (everything but sorting and paging)."""
    clauses: list[dict[str, Any]] = []
    if query.challenge is not None:
        clauses.append({"challenge": int(query.challenge)})
    if query.status is not None:
        clauses.append(sources.status_filter(query.status, now, stale_after_s))
    if query.tag:
        clauses.append({"tags": query.tag})
    if query.text:
        pattern = {"$regex": re.escape(query.text), "$options": "i"}
        clauses.append({"$or": [{"name": pattern}, {"notes": pattern}]})
    clauses += _started_clause(query) + _metric_clause(query)
    return _combine(clauses)


def _started_clause(query: RunQuery) -> list[dict[str, Any]]:
    started: dict[str, Any] = {}
    if query.started_from is not None:
        started["$gte"] = query.started_from
    if query.started_to is not None:
        started["$lt"] = query.started_to
    return [{"started_at": started}] if started else []


def _metric_clause(query: RunQuery) -> list[dict[str, Any]]:
    if query.metric_min is None and query.metric_max is None:
        return []
    value = _metric_value_expr(query.metric)
    # A missing metric is null and NaN sorts below numbers: require a finite number.
    parts: list[dict[str, Any]] = [{"$isNumber": value}, {"$ne": [value, math.nan]}]
    if query.metric_min is not None:
        parts.append({"$gte": [value, float(query.metric_min)]})
    if query.metric_max is not None:
        parts.append({"$lte": [value, float(query.metric_max)]})
    return [{"$expr": {"$and": parts}}]


def _combine(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    """One filter document: clauses on distinct fields side by side (so every server's planner
    sees the indexed fields), the rest under ``$and``."""
    merged: dict[str, Any] = {}
    rest: list[dict[str, Any]] = []
    for clause in clauses:
        if any(key in merged or key.startswith("$") for key in clause):
            rest.append(clause)
        else:
            merged.update(clause)
    if rest:
        merged["$and"] = rest
    return merged


#: Fields read per row (the best NRMSE is computed from its candidate paths).
_ROW_FIELDS = (
    "name",
    "challenge",
    "model.name",
    "status",
    "started_at",
    "ended_at",
    "heartbeat",
    "last_epoch",
    "tags",
    "host",
    *NRMSE_PATHS,
)


def _sort_spec(query: RunQuery) -> list[tuple[str, int]]:
    direction = -1 if query.descending else 1
    field = SORT_FIELDS[query.sort]
    if field == "started_at":
        # Start times are practically unique: one key lets a server walk the started_at index
        # (a second key would need an index on both).
        return [(field, direction)]
    return [(field, direction), ("_id", direction)]


def _fetch_by_field(db: Database, query: RunQuery, match: Mapping[str, Any]) -> list[dict]:
    cursor = (
        db[sources.EXPERIMENTS]
        .find(dict(match), dict.fromkeys(_ROW_FIELDS, 1))
        .sort(_sort_spec(query))
        .skip(query.page * query.page_size)
        .limit(query.page_size)
    )
    return list(cursor)


def _fetch_by_expression(
    db: Database, query: RunQuery, match: Mapping[str, Any], now: dt.datetime
) -> list[dict]:
    direction = -1 if query.descending else 1
    value = nrmse_expr() if query.sort == "best_nrmse" else _duration_expr(now)
    stages: list[dict[str, Any]] = [{"$match": dict(match)}] if match else []
    stages += [
        # Runs without a value go last in both directions.
        {"$addFields": {"_sort": value, "_has": {"$isNumber": value}}},
        {"$sort": {"_has": -1, "_sort": direction, "_id": direction}},
        {"$skip": query.page * query.page_size},
        {"$limit": query.page_size},
        {"$project": dict.fromkeys(_ROW_FIELDS, 1)},
    ]
    return list(db[sources.EXPERIMENTS].aggregate(stages))


def _row(doc: dict[str, Any], now: dt.datetime, stale_after_s: float) -> dict[str, Any]:
    doc = sources.present(doc, now, stale_after_s)
    started = doc.get("started_at")
    end = doc.get("ended_at") or (now if doc["status"] == sources.RUNNING else doc.get("heartbeat"))
    duration = (end - started).total_seconds() if started is not None and end is not None else None
    last_epoch = doc.get("last_epoch")
    nrmse = best_nrmse(doc)
    return {
        "id": str(doc["_id"]),
        "name": doc.get("name"),
        "challenge": doc.get("challenge"),
        "model": (doc.get("model") or {}).get("name"),
        "status": doc.get("status"),
        "started": started,
        "duration_s": duration,
        "epochs": None if last_epoch is None else int(last_epoch) + 1,
        "best_nrmse": nrmse,
        "nrmse_level": nrmse_level(doc),
        "tags": ", ".join(doc.get("tags") or []),
        "host": doc.get("host"),
    }


def _count(db: Database, query: RunQuery, match: Mapping[str, Any], shown: int) -> int:
    if query.page == 0 and shown < query.page_size:
        return shown  # everything fits on the first page: no count needed
    collection = db[sources.EXPERIMENTS]
    # Without a filter the collection's metadata count answers at once.
    return collection.count_documents(match) if match else collection.estimated_document_count()


def runs_page(
    db: Database,
    query: RunQuery,
    *,
    now: dt.datetime | None = None,
    stale_after_s: float = sources.DEFAULT_STALE_AFTER_S,
) -> RunsPage:
    """One page of the experiments table.

    Parameters
    ----------
    db:
        The tracking database.
    query:
        Filters, sort and page.
    now:
        The time against which heartbeats are judged (default: now, UTC).
    stale_after_s:
        A running run whose last heartbeat is older than this shows as ``stale``.

    Returns
    -------
    RunsPage
        ``rows``: a DataFrame with :data:`COLUMNS` (``duration_s`` in seconds, ``started`` an
        aware datetime, ``best_nrmse`` NaN where the run has none); ``total``: matching runs.
    """
    now = now or dt.datetime.now(dt.UTC)
    match = build_match(query, now, stale_after_s)
    if query.sort in SORT_EXPRESSIONS:
        docs = _fetch_by_expression(db, query, match, now)
    else:
        docs = _fetch_by_field(db, query, match)
    total = _count(db, query, match, len(docs))
    rows = pd.DataFrame([_row(d, now, stale_after_s) for d in docs], columns=list(COLUMNS))
    rows["best_nrmse"] = pd.to_numeric(rows["best_nrmse"], errors="coerce")
    return RunsPage(rows=rows, total=total, page=query.page, page_size=query.page_size)


def tag_options(db: Database, limit: int = 200) -> list[str]:
    """The ``limit`` most used tags, most used first (for the tag filter)."""
    pipeline = [
        {"$match": {"tags.0": {"$exists": True}}},
        {"$unwind": "$tags"},
        {"$group": {"_id": "$tags", "n": {"$sum": 1}}},
        {"$sort": {"n": -1, "_id": 1}},
        {"$limit": int(limit)},
    ]
    return [str(d["_id"]) for d in db[sources.EXPERIMENTS].aggregate(pipeline)]


def recent_runs(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """The newest runs (``id``, ``name``, ``status``, ``started``), running ones first.

    Used where a page offers a run to pick.
    """
    cursor = (
        db[sources.EXPERIMENTS]
        .find({}, {"name": 1, "status": 1, "started_at": 1, "heartbeat": 1})
        .sort([("started_at", -1), ("_id", -1)])
        .limit(int(limit))
    )
    now = dt.datetime.now(dt.UTC)
    runs = [sources.present(d, now, sources.DEFAULT_STALE_AFTER_S) for d in cursor]
    runs.sort(key=lambda d: d.get("status") != sources.RUNNING)
    return [
        {
            "id": str(d["_id"]),
            "name": d.get("name"),
            "status": d.get("status"),
            "started": d.get("started_at"),
        }
        for d in runs
    ]
