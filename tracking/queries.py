"""Queries over tracked runs: search, best N per challenge, compare, full history.

A run's *metric* for search, ranking and display is ``summary.<name>`` when that is set and not
null, else ``last_metrics.<name>`` (its last logged epoch), else None: :func:`metric_expr` says
it to MongoDB and :func:`run_metric` to Python, with the same rule (a null summary value falls
back; NaN is a value and does not). Statuses are reported with ``stale`` for
running runs whose heartbeat is older than ``stale_after_s``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.database import Database

from tracking.errors import NotFoundError
from tracking.object_ids import to_object_id
from tracking.schema import CHECKPOINTS, EPOCHS, EXPERIMENTS, METRICS, MODEL_VERSIONS
from tracking.status import DEFAULT_STALE_AFTER_S, present, status_filter
from tracking.timeutil import utcnow

#: Fields left out of list results (large, and shown by ``runs show``).
LIST_PROJECTION = {"log": 0, "traceback": 0}

_METRIC_FILTER = re.compile(
    r"^\s*(?:(?P<lo>[^<>=\s]+)\s*(?P<lo_op><=?)\s*)?(?P<name>[A-Za-z_][\w/\-]*)\s*"
    r"(?:(?P<op><=|>=|<|>|==|=)\s*(?P<value>[^<>=\s]+))?\s*$"
)


def metric_expr(name: str) -> dict[str, Any]:
    """Aggregation expression of a run's metric ``name``: the MongoDB twin of :func:`run_metric`.

    ``$ifNull`` takes the last epoch's value when the summary value is missing or null.
    """
    return {"$ifNull": [f"$summary.{name}", f"$last_metrics.{name}"]}


def run_metric(doc: Mapping[str, Any], name: str) -> Any:
    """A run's metric ``name`` from its experiment document (the rule of :func:`metric_expr`).

    ``summary.<name>`` when present and not None, else ``last_metrics.<name>``, else None.
    NaN is returned as it is (a diverging run's loss is data); queries leave it out of ranges.
    """
    value = (doc.get("summary") or {}).get(name)
    if value is None:
        value = (doc.get("last_metrics") or {}).get(name)
    return value


def parse_metric_filter(text: str) -> tuple[str, dict[str, float]]:
    """Parse ``"val_loss<0.5"``, ``"val_loss>=0.1"``, ``"0.1<=val_loss<0.5"`` or ``"epochs=3"``.

    Returns the metric name and a MongoDB range (``{"$lt": 0.5}``...).
    """
    match = _METRIC_FILTER.match(text)
    if not match or (match["op"] is None and match["lo"] is None):
        raise ValueError(
            f"metric filter {text!r} not understood; write NAME<VALUE, NAME>=VALUE, "
            "LOW<=NAME<HIGH or NAME=VALUE (e.g. 'val_loss<0.5')"
        )
    ops = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "=": "$eq", "==": "$eq"}
    flipped = {"<": "$gt", "<=": "$gte"}
    cond: dict[str, float] = {}
    try:
        if match["lo"] is not None:
            cond[flipped[match["lo_op"]]] = float(match["lo"])
        if match["op"] is not None:
            cond[ops[match["op"]]] = float(match["value"])
    except ValueError as exc:
        raise ValueError(f"metric filter {text!r}: bounds must be numbers ({exc})") from exc
    return match["name"], cond


def _range(bounds: Any) -> dict[str, Any]:
    """A MongoDB condition from ``(lo, hi)`` (inclusive, None = open) or an operator dict."""
    if isinstance(bounds, Mapping):
        return dict(bounds)
    if isinstance(bounds, tuple | list) and len(bounds) == 2:
        lo, hi = bounds
        cond = {}
        if lo is not None:
            cond["$gte"] = lo
        if hi is not None:
            cond["$lte"] = hi
        return cond
    return {"$eq": bounds}


def build_filter(
    *,
    challenge: int | None = None,
    status: str | None = None,
    tags: Iterable[str] = (),
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> dict[str, Any]:
    """The MongoDB filter behind :func:`search_runs`."""
    clauses: list[dict[str, Any]] = []
    if challenge is not None:
        clauses.append({"challenge": int(challenge)})
    if status is not None:
        clauses.append(status_filter(status, utcnow(), stale_after_s))
    tags = list(tags)
    if tags:
        clauses.append({"tags": {"$all": tags}})
    if name:
        clauses.append({"name": {"$regex": re.escape(name), "$options": "i"}})
    for key, value in (config or {}).items():
        if isinstance(value, tuple | Mapping):
            clauses.append({f"config.{key}": _range(value)})
        else:
            clauses.append({f"config.{key}": value})
    for metric, bounds in (metrics or {}).items():
        clauses.append({"$expr": _expr_range(metric_expr(metric), _range(bounds))})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _expr_range(expr: dict[str, Any], cond: Mapping[str, Any]) -> dict[str, Any]:
    # $expr comparisons treat a missing value as null, which sorts below numbers: require a
    # number so "val_loss < 0.5" does not match runs without val_loss.
    # NaN sorts below every number, so "< 0.5" would match it: leave NaN out explicitly.
    parts = [{"$isNumber": expr}, {"$ne": [expr, math.nan]}]
    parts += [{op: [expr, value]} for op, value in cond.items()]
    return {"$and": parts}


def search_runs(
    db: Database,
    *,
    challenge: int | None = None,
    status: str | None = None,
    tags: Iterable[str] = (),
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    limit: int = 50,
    sort: str = "started_at",
    descending: bool = True,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> list[dict[str, Any]]:
    """Runs matching every given filter, newest first by default.

    Parameters
    ----------
    challenge, status, tags, name:
        Equality on challenge; reported status (``stale`` included); all of ``tags``;
        case-insensitive substring of the name.
    config:
        ``{"batch_size": 64, "optimizer": "Adamax", "learning_rate": (1e-4, 1e-2)}``: dotted
        paths under ``config``; a tuple is an inclusive range, a dict an operator document.
    metrics:
        ``{"val_loss": (None, 0.5)}`` or ``{"val_loss": {"$lt": 0.5}}`` on the run metric.
    limit:
        Maximum number of runs (0 = all).
    """
    query = build_filter(
        challenge=challenge,
        status=status,
        tags=tags,
        name=name,
        config=config,
        metrics=metrics,
        stale_after_s=stale_after_s,
    )
    direction = pymongo.DESCENDING if descending else pymongo.ASCENDING
    cursor = (
        db[EXPERIMENTS].find(query, LIST_PROJECTION).sort([(sort, direction), ("_id", direction)])
    )
    if limit:
        cursor = cursor.limit(int(limit))
    now = utcnow()
    return [present(doc, now, stale_after_s) for doc in cursor]


def best_runs(
    db: Database,
    *,
    metric: str = "val_loss",
    n: int = 5,
    challenge: int | None = None,
    mode: str = "min",
    status: str | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> dict[int, list[dict[str, Any]]]:
    """The ``n`` best runs of each challenge by ``metric`` (one aggregation, ``$topN``).

    Runs whose metric is missing or NaN are left out. Returns ``{challenge: [run, ...]}`` with
    each run's value under ``metric_value``.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    match = build_filter(challenge=challenge, status=status, stale_after_s=stale_after_s)
    pipeline = [
        {"$match": match},
        {"$addFields": {"metric_value": metric_expr(metric)}},
        # NaN sorts below every number in MongoDB; keep finite values only.
        {"$match": {"metric_value": {"$gt": -math.inf, "$lt": math.inf}}},
        {"$project": LIST_PROJECTION},
        {
            "$group": {
                "_id": "$challenge",
                "runs": {
                    "$topN": {
                        "n": int(n),
                        "sortBy": {"metric_value": 1 if mode == "min" else -1, "_id": 1},
                        "output": "$$ROOT",
                    }
                },
            }
        },
        {"$sort": {"_id": 1}},
    ]
    now = utcnow()
    return {
        group["_id"]: [present(doc, now, stale_after_s) for doc in group["runs"]]
        for group in db[EXPERIMENTS].aggregate(pipeline)
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _get_experiments(db: Database, ids: Sequence[str | ObjectId]) -> list[dict[str, Any]]:
    oids = [to_object_id(i) for i in ids]
    found = {d["_id"]: d for d in db[EXPERIMENTS].find({"_id": {"$in": oids}}, LIST_PROJECTION)}
    missing = [str(i) for i in oids if i not in found]
    if missing:
        raise NotFoundError(
            f"no experiment with id {', '.join(missing)}; list runs with `eegfs runs list`"
        )
    return [found[i] for i in oids]


def compare_runs(
    db: Database,
    experiment_ids: Sequence[str | ObjectId],
    *,
    metrics: Sequence[str] | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> dict[str, Any]:
    """Config differences and per-epoch metric curves of several runs, side by side.

    Returns
    -------
    dict
        ``runs``: the experiment documents (in the order given); ``differences``:
        ``{dotted key: [value per run]}`` over model/config/data/features/code where the runs
        differ; ``same``: the keys they share with one value; ``summary``: ``{metric: [value
        per run]}``; ``curves``: ``{metric: {"epochs": [...], "values": [[value per epoch]
        per run]}}`` (None where a run has no value).
    """
    if len(experiment_ids) < 2:
        raise ValueError("compare needs at least two experiment ids")
    runs = _get_experiments(db, experiment_ids)
    now = utcnow()
    runs = [present(r, now, stale_after_s) for r in runs]
    flat = [
        _flatten({k: r.get(k) for k in ("model", "config", "data", "features", "code")})
        for r in runs
    ]
    keys = sorted(set().union(*flat))
    differences, same = {}, {}
    for key in keys:
        values = [f.get(key) for f in flat]
        if all(v == values[0] for v in values):
            same[key] = values[0]
        else:
            differences[key] = values
    summary_keys = sorted(set().union(*[r.get("summary") or {} for r in runs]))
    summary = {k: [(r.get("summary") or {}).get(k) for r in runs] for k in summary_keys}

    ids = [r["_id"] for r in runs]
    by_run: dict[ObjectId, dict[int, dict[str, float]]] = {i: {} for i in ids}
    for e in db[EPOCHS].find(
        {"experiment_id": {"$in": ids}}, {"experiment_id": 1, "epoch": 1, "metrics": 1}
    ):
        by_run[e["experiment_id"]][e["epoch"]] = e.get("metrics") or {}
    names = (
        list(metrics)
        if metrics
        else sorted({m for r in by_run.values() for e in r.values() for m in e})
    )
    epochs = sorted({e for r in by_run.values() for e in r})
    curves = {
        name: {
            "epochs": epochs,
            "values": [[by_run[i].get(e, {}).get(name) for e in epochs] for i in ids],
        }
        for name in names
    }
    return {
        "runs": runs,
        "differences": differences,
        "same": same,
        "summary": summary,
        "curves": curves,
    }


def run_history(
    db: Database, experiment_id: str | ObjectId, *, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> dict[str, Any]:
    """Everything recorded about one run.

    Returns ``experiment``, ``epochs`` (by epoch), ``checkpoints`` (by epoch; ``is_best`` as
    the experiment's ``best_checkpoint`` says), ``steps``
    (step metric points in step order, from every bucket), ``model_versions`` registered from
    it and ``resumes``.
    """
    exp_id = to_object_id(experiment_id)
    doc = db[EXPERIMENTS].find_one({"_id": exp_id})
    if doc is None:
        raise NotFoundError(f"no experiment {exp_id}; list runs with `eegfs runs list`")
    epochs = list(db[EPOCHS].find({"experiment_id": exp_id}).sort("epoch", 1))
    checkpoints = list(
        db[CHECKPOINTS].find({"experiment_id": exp_id}).sort([("epoch", 1), ("created_at", 1)])
    )
    best_id = (doc.get("best_checkpoint") or {}).get("id")
    if best_id is not None:
        # The experiment's best_checkpoint is the source of truth (tracking/best.py); the
        # stored flags can lag it after a crash in the middle of a switch.
        for ckpt in checkpoints:
            ckpt["is_best"] = ckpt["_id"] == best_id
    points = [
        p
        for b in db[METRICS].find({"experiment_id": exp_id}).sort("first_step", 1)
        for p in b["points"]
    ]
    points.sort(key=lambda p: (p["step"], p["at"]))
    versions = list(
        db[MODEL_VERSIONS]
        .find({"lineage.experiment_id": exp_id})
        .sort([("name", 1), ("version", 1)])
    )
    return {
        "experiment": present(doc, utcnow(), stale_after_s),
        "epochs": epochs,
        "checkpoints": checkpoints,
        "steps": points,
        "model_versions": versions,
        "resumes": doc.get("resumes", []),
    }
