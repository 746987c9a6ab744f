"""Data of the Run page: one run's record, epochs, step metrics, checkpoints, log and live state.

Everything is read from MongoDB except the live state, which comes from the Redis hash the
training loop updates (``training:<id>:state``). :func:`new_epochs` and :func:`new_steps` read
only what is newer than what a page already shows, so a page that refreshes every second sends
small queries. With Redis away, :func:`live_state` says so and the rest still works.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.database import Database

from dashboard import sources
from dashboard.errors import DashboardError, RunNotFoundError

#: Step points drawn at most (older buckets are thinned on the server to stay under it).
MAX_STEP_POINTS = 4000
#: Characters of the run log shown (its end: the end explains a crash).
LOG_TAIL_CHARS = 20_000
#: Epoch metrics drawn as curves, in panels.
LOSS_METRICS = ("train_loss", "val_loss")
NRMSE_METRICS = ("val_nrmse", "val_subject_nrmse")
BASELINE_METRICS = ("val_mean_predictor_nrmse", "val_subject_mean_predictor_nrmse")
LR_METRIC = "lr"
#: Experiment fields left out of the overview (large; the log tail is read on its own).
_HEAVY = {"log": 0, "traceback": 0}


def to_run_id(value: str | ObjectId) -> ObjectId:
    """``value`` as an ObjectId; :class:`DashboardError` naming the value otherwise."""
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value).strip())
    except (InvalidId, TypeError) as exc:
        raise DashboardError(
            f"run id {value!r} is not a valid id: expected 24 hexadecimal characters "
            "(copy it from the Runs page or `eegfs runs list`)"
        ) from exc


def run_overview(
    db: Database,
    run_id: str | ObjectId,
    *,
    now: dt.datetime | None = None,
    stale_after_s: float = sources.DEFAULT_STALE_AFTER_S,
) -> dict[str, Any]:
    """A run's record with its reported status, and its lineage.

    Returns
    -------
    dict
        The experiment document without ``log``/``traceback`` (``status`` as reported,
        ``stale`` included; ``error`` kept), plus ``lineage``: ``feature_service``,
        ``snapshot_id``, ``code_commit``, ``code_dirty``, ``code_branch`` and ``files`` (one
        dict per data file: ``path``, ``release``, ``windows``, ``sha256`` from the datasets
        catalogue, None when the file is not catalogued).
    """
    oid = to_run_id(run_id)
    doc = db[sources.EXPERIMENTS].find_one({"_id": oid}, _HEAVY)
    if doc is None:
        raise RunNotFoundError(
            f"no run {oid} in database {db.name!r}; pick one on the Runs page or list them "
            "with `eegfs runs list`"
        )
    doc = sources.present(doc, now or dt.datetime.now(dt.UTC), stale_after_s)
    doc["lineage"] = _lineage(db, doc)
    return doc


def _lineage(db: Database, doc: Mapping[str, Any]) -> dict[str, Any]:
    features = doc.get("features") or {}
    code = doc.get("code") or {}
    files = [f if isinstance(f, Mapping) else {"path": str(f)} for f in _data_files(doc)]
    paths = [str(f.get("path")) for f in files if f.get("path")]
    by_path: dict[str, str] = {}
    if paths:
        query = {"$or": [{"path": {"$in": paths}}, {"locations.path": {"$in": paths}}]}
        for d in db[sources.DATASETS].find(query, {"sha256": 1, "path": 1, "locations": 1}):
            for where in [d.get("path"), *[loc.get("path") for loc in d.get("locations") or []]]:
                if where in paths:
                    by_path[where] = d.get("sha256")
    return {
        "feature_service": features.get("feature_service") or features.get("service"),
        "snapshot_id": features.get("snapshot_id"),
        "feature_mode": features.get("mode"),
        "code_commit": code.get("commit"),
        "code_dirty": code.get("dirty"),
        "code_branch": code.get("branch"),
        "files": [
            {
                "path": f.get("path"),
                "release": f.get("release"),
                "windows": f.get("n_windows", f.get("windows")),
                "sha256": f.get("sha256") or by_path.get(str(f.get("path"))),
            }
            for f in files
        ],
    }


def _data_files(doc: Mapping[str, Any]) -> list:
    files = (doc.get("data") or {}).get("files") or []
    return list(files) if isinstance(files, list | tuple) else []


def epochs_frame(
    db: Database, run_id: str | ObjectId, *, after_epoch: int | None = None
) -> pd.DataFrame:
    """The run's epochs, one row each (``epoch``, ``logged_at`` and one column per metric).

    With ``after_epoch``, only the epochs after it (what a live page has not drawn yet).
    """
    query: dict[str, Any] = {"experiment_id": to_run_id(run_id)}
    if after_epoch is not None:
        query["epoch"] = {"$gt": int(after_epoch)}
    cursor = (
        db[sources.EPOCHS]
        .find(query, {"epoch": 1, "metrics": 1, "logged_at": 1, "_id": 0})
        .sort("epoch", 1)
    )
    rows = [
        {"epoch": d["epoch"], "logged_at": d.get("logged_at"), **(d.get("metrics") or {})}
        for d in cursor
    ]
    return _numeric(pd.DataFrame(rows, columns=None if rows else ["epoch", "logged_at"]))


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    for column in df.columns:
        if column not in ("logged_at", "at"):
            df[column] = pd.to_numeric(df[column], errors="coerce")
    return df


def steps_frame(
    db: Database,
    run_id: str | ObjectId,
    *,
    after_step: int | None = None,
    max_points: int = MAX_STEP_POINTS,
) -> pd.DataFrame:
    """Step metrics (``step`` and one column per metric), thinned to about ``max_points``.

    Buckets are thinned on the server (every k-th point of each bucket, k chosen from the
    total), so a run with a million steps sends a few thousand points. With ``after_step``,
    only points after it, unthinned (what a live page appends).
    """
    oid = to_run_id(run_id)
    collection = db[sources.METRICS]
    if after_step is not None:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"experiment_id": oid, "last_step": {"$gt": int(after_step)}}},
            {"$sort": {"first_step": 1}},
            {
                "$project": {
                    "_id": 0,
                    "points": {
                        "$filter": {
                            "input": "$points",
                            "as": "p",
                            "cond": {"$gt": ["$$p.step", int(after_step)]},
                        }
                    },
                }
            },
        ]
    else:
        # The stride comes from the number of buckets (an index count) times their capacity,
        # so the points are read in one pass; part-filled buckets only thin a little more.
        buckets = collection.count_documents({"experiment_id": oid})
        stride = max(1, math.ceil(buckets * sources.BUCKET_MAX_POINTS / max(1, int(max_points))))
        pipeline = [
            {"$match": {"experiment_id": oid}},
            {"$sort": {"first_step": 1}},
            {"$project": {"_id": 0, "points": _every_kth("$points", stride)}},
        ]
    points = [p for b in collection.aggregate(pipeline) for p in b.get("points") or []]
    return _points_frame(points)


def _every_kth(array: str, k: int) -> Any:
    if k == 1:
        return array
    return {
        "$map": {
            "input": {"$range": [0, {"$size": array}, int(k)]},
            "as": "i",
            "in": {"$arrayElemAt": [array, "$$i"]},
        }
    }


def _points_frame(points: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"step": p["step"], **(p.get("values") or {})} for p in points if "step" in p]
    if not rows:
        return pd.DataFrame(columns=["step"])
    df = pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step")
    return _numeric(df.reset_index(drop=True))


def checkpoints_frame(db: Database, run_id: str | ObjectId) -> pd.DataFrame:
    """The run's checkpoints: epoch, best flag, size, sha256, path, GridFS copy, metrics."""
    cursor = (
        db[sources.CHECKPOINTS]
        .find({"experiment_id": to_run_id(run_id)})
        .sort([("epoch", 1), ("created_at", 1)])
    )
    rows = []
    for d in cursor:
        metrics = d.get("metrics") or {}
        rows.append(
            {
                "id": str(d["_id"]),
                "epoch": d.get("epoch"),
                "best": bool(d.get("is_best")),
                "size_bytes": d.get("size_bytes"),
                "sha256": d.get("sha256"),
                "path": d.get("path"),
                "host": d.get("host"),
                "in_gridfs": d.get("gridfs_id") is not None,
                "val_loss": metrics.get("val_loss"),
                "created_at": d.get("created_at"),
            }
        )
    columns = [
        "id",
        "epoch",
        "best",
        "size_bytes",
        "sha256",
        "path",
        "host",
        "in_gridfs",
        "val_loss",
        "created_at",
    ]
    return pd.DataFrame(rows, columns=columns)


def log_tail(db: Database, run_id: str | ObjectId, chars: int = LOG_TAIL_CHARS) -> dict[str, Any]:
    """The end of the run's stored log (``text``, ``total_chars``, ``truncated``) and its error.

    Only the last ``chars`` characters travel from the server.
    """
    oid = to_run_id(run_id)
    text = {"$ifNull": ["$log.text", ""]}
    length = {"$strLenCP": text}
    pipeline = [
        {"$match": {"_id": oid}},
        {
            "$project": {
                "_id": 0,
                "total_chars": length,
                "stored_truncated": "$log.truncated",
                "tail": {
                    "$substrCP": [
                        text,
                        {"$max": [0, {"$subtract": [length, int(chars)]}]},
                        int(chars),
                    ]
                },
                "error": 1,
                "traceback_tail": {
                    "$substrCP": [
                        {"$ifNull": ["$traceback", ""]},
                        {
                            "$max": [
                                0,
                                {
                                    "$subtract": [
                                        {"$strLenCP": {"$ifNull": ["$traceback", ""]}},
                                        int(chars),
                                    ]
                                },
                            ]
                        },
                        int(chars),
                    ]
                },
            }
        },
    ]
    found = list(db[sources.EXPERIMENTS].aggregate(pipeline))
    if not found:
        raise RunNotFoundError(f"no run {oid} in database {db.name!r}")
    doc = found[0]
    total = int(doc.get("total_chars") or 0)
    return {
        "text": doc.get("tail") or "",
        "total_chars": total,
        "truncated": total > chars or bool(doc.get("stored_truncated")),
        "error": doc.get("error"),
        "traceback": doc.get("traceback_tail") or None,
    }


def live_state(redis, run_id: str | ObjectId) -> dict[str, Any]:
    """The run's latest live state from Redis.

    Returns
    -------
    dict
        ``available`` (False when Redis did not answer: then ``error`` says why), ``found``
        (the hash exists), ``status``, ``epoch``, ``step``, ``updated`` and ``last`` /
        ``last_epoch``: the last message and the last epoch message (JSON-decoded dicts).
    """
    key = sources.state_key(str(to_run_id(run_id)))
    if redis is None:
        return {"available": False, "found": False, "error": "no Redis configured"}
    try:
        raw = redis.hgetall(key)
    except Exception as exc:  # noqa: BLE001 - any Redis failure means "live updates off"
        return {"available": False, "found": False, "error": f"{type(exc).__name__}: {exc}"}
    fields = {_text(k): _text(v) for k, v in raw.items()}
    state: dict[str, Any] = {"available": True, "found": bool(fields), "error": None}
    for name in ("status", "updated"):
        state[name] = fields.get(name)
    for name in ("epoch", "step"):
        state[name] = _int_or_none(fields.get(name))
    for name in ("last", "last_epoch"):
        state[name] = _json_or_none(fields.get(name))
    return state


def live_step_point(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The step point in a live state's last message (``step`` + numeric values), if any."""
    last = state.get("last")
    if not isinstance(last, Mapping) or last.get("type") != "step" or last.get("step") is None:
        return None
    skip = {"type", "experiment_id", "time", "epoch", "step", "status"}
    values = {k: v for k, v in last.items() if k not in skip and isinstance(v, int | float)}
    return {"step": int(last["step"]), **values}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _json_or_none(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def run_page_data(
    db: Database,
    redis,
    run_id: str | ObjectId,
    *,
    now: dt.datetime | None = None,
    stale_after_s: float = sources.DEFAULT_STALE_AFTER_S,
) -> dict[str, Any]:
    """Everything the Run page shows on its first render, in one call.

    ``overview`` (:func:`run_overview`), ``epochs``, ``steps``, ``checkpoints``, ``log``
    (:func:`log_tail`) and ``live`` (:func:`live_state`).
    """
    overview = run_overview(db, run_id, now=now, stale_after_s=stale_after_s)
    oid = overview["_id"]
    return {
        "overview": overview,
        "epochs": epochs_frame(db, oid),
        "steps": steps_frame(db, oid),
        "checkpoints": checkpoints_frame(db, oid),
        "log": log_tail(db, oid),
        "live": live_state(redis, oid),
    }


#: Fields :func:`run_progress` reads (what changes while a run runs).
_PROGRESS_FIELDS = (
    "status",
    "heartbeat",
    "started_at",
    "ended_at",
    "last_epoch",
    "summary",
    "best_checkpoint",
)


def run_progress(
    db: Database,
    run_id: str | ObjectId,
    *,
    now: dt.datetime | None = None,
    stale_after_s: float = sources.DEFAULT_STALE_AFTER_S,
) -> dict[str, Any] | None:
    """The fields of a run that change while it runs (reported status, heartbeat, start/end,
    last epoch, summary, best checkpoint), or None when there is no such run."""
    doc = db[sources.EXPERIMENTS].find_one(
        {"_id": to_run_id(run_id)}, dict.fromkeys(_PROGRESS_FIELDS, 1)
    )
    if doc is None:
        return None
    return sources.present(doc, now or dt.datetime.now(dt.UTC), stale_after_s)
