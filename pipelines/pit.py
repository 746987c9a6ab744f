"""Point-in-time join: one row per entity row, in order, NaN where no value existed then.

Feast semantics (the same as its offline stores): for an entity row (subject, t) take the
feature row of that subject with the latest ``event_timestamp <= t`` and ``t - event_timestamp
<= ttl`` (ttl 0 = unbounded); rows with the same event time are resolved by the latest
``created``. Unlike Feast 0.67's file (dask) store this keeps entity rows whose (subject, t)
repeats or that have no match (Feast issue 6787), and unlike its duckdb store it keeps the entity
frame's order. Built on :func:`pandas.merge_asof`, which does the per-subject backward search.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

ROW_ID = "__eegfs_row__"


def normalize_entity_timestamps(ts: pd.Series) -> pd.Series:
    """``ts`` as ``datetime64[ns, UTC]`` (naive values are taken as UTC, as Feast does)."""
    out = pd.to_datetime(ts, utc=False)
    if getattr(out.dt, "tz", None) is None:
        out = out.dt.tz_localize("UTC")
    else:
        out = out.dt.tz_convert("UTC")
    return out.astype("datetime64[ns, UTC]")


def _naive_utc(ts: pd.Series) -> np.ndarray:
    """datetime64[ns] values in UTC without a time zone (naive input is taken as UTC)."""
    ts = pd.Series(ts)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy(dtype="datetime64[ns]")


def point_in_time_join(
    entities: pd.DataFrame,
    features: pd.DataFrame,
    feature_columns: list[str],
    *,
    ttl: timedelta | None = None,
    key: str = "subject_id",
    timestamp: str = "event_timestamp",
    created: str | None = "created",
) -> pd.DataFrame:
    """Feature values as of each entity row.

    Parameters
    ----------
    entities : DataFrame
        Columns ``key`` (str) and ``timestamp`` (datetime64[ns, UTC]); any order, duplicates ok.
    features : DataFrame
        Columns ``key``, ``timestamp``, optionally ``created``, and ``feature_columns``.
    feature_columns : list of str
    ttl : timedelta, optional
        Maximum age of a feature row; ``None`` or 0 means unbounded.

    Returns
    -------
    DataFrame
        ``len(entities)`` rows in the order of ``entities`` (index reset), with
        ``feature_columns`` only; missing values are NaN.
    """
    n = len(entities)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=features[c].dtype) for c in feature_columns})
    # join on naive UTC datetime64[ns]: tz-aware columns would go through per-element Timestamps
    left = pd.DataFrame(
        {
            ROW_ID: np.arange(n),
            key: entities[key].astype(str).to_numpy(),
            timestamp: _naive_utc(entities[timestamp]),
        }
    )
    if len(features) == 0:
        return pd.DataFrame({c: np.full(n, np.nan) for c in feature_columns})
    sort_cols = [timestamp] + ([created] if created and created in features.columns else [])
    right = features[[key, *sort_cols, *feature_columns]].sort_values(sort_cols, kind="stable")
    right = right.drop_duplicates([key, timestamp], keep="last")
    right = right.astype({key: str})
    right[timestamp] = _naive_utc(right[timestamp])
    left = left.sort_values(timestamp, kind="stable")
    tolerance = pd.Timedelta(ttl) if ttl else None
    merged = pd.merge_asof(
        left,
        right.drop(columns=[c for c in sort_cols if c != timestamp]),
        on=timestamp,
        by=key,
        direction="backward",
        allow_exact_matches=True,
        tolerance=tolerance,
    )
    merged = merged.sort_values(ROW_ID, kind="stable")
    return merged[feature_columns].reset_index(drop=True)


__all__ = ["normalize_entity_timestamps", "point_in_time_join"]
