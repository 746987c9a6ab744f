"""Data of the Compare page: config differences, overlaid curves, final metrics, and a
parallel-coordinates table of hyperparameters against the best NRMSE for runs sharing a tag.

Colors: :func:`assign_colors` gives each run a palette color that it keeps for the whole
session (the pages pass the same mapping around), and no two runs on one chart share one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pymongo.database import Database

from dashboard import sources
from dashboard.errors import DashboardError
from dashboard.metrics import best_nrmse, nrmse_expr
from dashboard.run_detail import to_run_id

MIN_RUNS = 2
MAX_RUNS = 10
#: Runs read for one parallel-coordinates chart (newest first).
MAX_PARALLEL_RUNS = 500
#: A categorical hyperparameter with more values than this is left out of the chart.
MAX_CATEGORIES = 20
#: Qualitative palette (Plotly's default ten, then D3's and Dark24's): color-blind-tolerant
#: neighbours first.
PALETTE = (
    *("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A"),
    *("#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52"),
    *("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD"),
    *("#8C564B", "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF"),
)


def assign_colors(
    run_ids: Sequence[str], existing: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Colors for ``run_ids``: those in ``existing`` keep theirs, new ones get free colors.

    Returns the updated mapping (a new dict: ``existing`` plus the new runs). A new run gets
    the first palette color not used by any run in ``run_ids``; when all are used (more runs
    than colors) it gets the least used one.
    """
    colors = dict(existing or {})
    in_use = [colors[r] for r in run_ids if r in colors]
    for run_id in run_ids:
        if run_id in colors:
            continue
        free = [c for c in PALETTE if c not in in_use]
        color = free[0] if free else min(PALETTE, key=in_use.count)
        colors[run_id] = color
        in_use.append(color)
    return colors


def check_selection(run_ids: Sequence[str]) -> list[str]:
    """``run_ids`` deduplicated and validated: 2 to 10 valid run ids."""
    unique = list(dict.fromkeys(str(to_run_id(r)) for r in run_ids))
    if not MIN_RUNS <= len(unique) <= MAX_RUNS:
        raise DashboardError(
            f"compare needs {MIN_RUNS} to {MAX_RUNS} runs, got {len(unique)}; select them in "
            "the Runs table"
        )
    return unique


def compare_data(db: Database, run_ids: Sequence[str]) -> dict[str, Any]:
    """Config diff, curves and final metrics of 2-10 runs.

    Returns
    -------
    dict
        ``runs``: DataFrame (id, name, status, challenge, best_nrmse); ``differences``:
        DataFrame with one row per differing key (dotted path under model/config/data/
        features/code) and one column per run id; ``summary``: DataFrame of final metrics
        (one row per metric, one column per run id); ``curves``: ``{metric: DataFrame(epoch,
        <run id>...)}``.
    """
    ids = check_selection(run_ids)
    try:
        result = sources.compare_runs(db, ids)
    except sources.TrackingNotFoundError as exc:
        raise DashboardError(str(exc)) from exc
    runs = result["runs"]
    run_rows = [
        {
            "id": str(r["_id"]),
            "name": r.get("name"),
            "status": r.get("status"),
            "challenge": r.get("challenge"),
            "best_nrmse": best_nrmse(r),
        }
        for r in runs
    ]
    differences = pd.DataFrame(
        {rid: [_cell(v[i]) for v in result["differences"].values()] for i, rid in enumerate(ids)},
        index=pd.Index(list(result["differences"]), name="key"),
    )
    summary = pd.DataFrame(
        {rid: [v[i] for v in result["summary"].values()] for i, rid in enumerate(ids)},
        index=pd.Index(list(result["summary"]), name="metric"),
    )
    curves = {
        name: pd.DataFrame(
            {"epoch": curve["epochs"], **{rid: curve["values"][i] for i, rid in enumerate(ids)}}
        )
        for name, curve in result["curves"].items()
    }
    return {
        "runs": pd.DataFrame(run_rows),
        "differences": differences,
        "summary": summary,
        "curves": curves,
    }


def _cell(value: Any) -> str:
    """A config value as text (the diff table mixes types)."""
    return "—" if value is None else str(value)


def parallel_frame(db: Database, tag: str, *, limit: int = MAX_PARALLEL_RUNS) -> pd.DataFrame:
    """Hyperparameters and best NRMSE of the runs tagged ``tag`` (newest ``limit``).

    One row per run with a best NRMSE: ``id``, ``name``, ``best_nrmse`` and one column per
    ``config`` key (dotted) whose value differs between the runs. Numbers stay numbers;
    strings and booleans stay as they are (the chart encodes them); keys with more than
    :data:`MAX_CATEGORIES` text values, or present in fewer than half the runs, are left out.
    """
    if not tag:
        raise DashboardError("choose a tag: the chart shows the runs that share it")
    cursor = db[sources.EXPERIMENTS].aggregate(
        [
            {"$match": {"tags": tag}},
            {"$sort": {"started_at": -1, "_id": -1}},
            {"$limit": int(limit)},
            {"$project": {"name": 1, "config": 1, "best_nrmse": nrmse_expr()}},
        ]
    )
    rows = []
    for doc in cursor:
        nrmse = doc.get("best_nrmse")
        if not isinstance(nrmse, int | float) or not math.isfinite(nrmse):
            continue
        flat = _flatten(doc.get("config") or {})
        rows.append({"id": str(doc["_id"]), "name": doc.get("name"), "best_nrmse": nrmse, **flat})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["id", "name", "best_nrmse"])
    keep = ["id", "name"]
    for column in df.columns:
        if column in ("id", "name", "best_nrmse"):
            continue
        values = df[column]
        if values.notna().sum() < len(df) / 2 or values.astype(str).nunique() < 2:
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum() and values.map(_is_number).all():
            df[column] = numeric
        elif values.astype(str).nunique() > MAX_CATEGORIES:
            continue
        else:
            df[column] = values.astype(str)
        keep.append(column)
    return df[[*keep, "best_nrmse"]]


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple):
        return {prefix: ", ".join(map(str, value))}
    return {prefix: value}
