"""Point-in-time correct training frames from the offline store (the manifest-listed Parquet files).

Computed here (:func:`pipelines.pit.point_in_time_join`, pandas ``merge_asof``) rather than by
Feast's file (dask) offline store, which drops entity rows that repeat or have no match (Feast
issue 6787); the values equal Feast's where Feast returns a row (a test checks it).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurestore.catalog import ServiceInfo
from featurestore.errors import FeatureStoreError
from featurestore.repo import ENTITY_KEY, TABLE_TAG
from featurestore.values import normalize_column
from pipelines import feature_tables as ft
from pipelines.pit import normalize_entity_timestamps, point_in_time_join
from services.ids import normalize_subject_id

TIME_COLUMNS = ("event_timestamp", "created")


def table_files(
    manifest: ft.Manifest, table: str, snapshot_ids: Collection[str] | None = None
) -> list[Path]:
    """Committed files of ``table`` (e.g. ``subject_features/challenge2``), oldest first.

    ``snapshot_ids`` limits them to those snapshots (e.g. the ones a model was trained with).
    """
    rows = []
    for snap in manifest.snapshots.values():
        if snapshot_ids is not None and snap["snapshot_id"] not in snapshot_ids:
            continue
        for rel in snap.get("files", {}).values():
            if str(Path(rel).parent) == table:
                path = Path(manifest.features_dir) / rel
                rows.append((snap["event_timestamp"], snap["snapshot_id"], path))
    return [p for *_, p in sorted(rows)]


def snapshots_time(
    features_dir: Path, snapshot_ids: Collection[str]
) -> tuple[pd.Timestamp | None, list[str]]:
    """(latest ``event_timestamp`` of ``snapshot_ids``, ids not in the offline store).

    Reading a recorded snapshot set as of that time, limited to those snapshots, gives the
    latest row of each subject among them: what a materialization of them served.
    """
    manifest = ft.Manifest.load(features_dir)
    present = [s for s in snapshot_ids if s in manifest.snapshots]
    missing = sorted(set(snapshot_ids) - set(present))
    stamps = [pd.Timestamp(manifest.snapshots[s]["event_timestamp"]) for s in present]
    return (max(stamps) if stamps else None), missing


def _entity_frame(entity_df: pd.DataFrame) -> pd.DataFrame:
    """Normalised subject ids and naive-UTC ``datetime64[ns]`` times of ``entity_df``."""
    for col in (ENTITY_KEY, "event_timestamp"):
        if col not in entity_df.columns:
            raise ValueError(
                f"entity_df needs columns subject_id and event_timestamp, missing {col!r} "
                f"(has {list(entity_df.columns)})"
            )
    codes, uniques = pd.factorize(entity_df[ENTITY_KEY].astype(str), use_na_sentinel=False)
    canon = np.array([normalize_subject_id(u) for u in uniques], dtype=object)
    times = normalize_entity_timestamps(entity_df["event_timestamp"]).dt.tz_localize(None)
    return pd.DataFrame(
        {
            ENTITY_KEY: canon[codes] if len(codes) else np.array([], dtype=object),
            "event_timestamp": times.to_numpy(),
        }
    )


class OfflineReader:
    """Historical features of ``features_dir``; tables read once per set of files."""

    def __init__(self, features_dir: Path) -> None:
        self.features_dir = Path(features_dir)
        self._tables: dict[tuple, pd.DataFrame] = {}

    def clear(self) -> None:
        """Forget the tables read so far."""
        self._tables.clear()

    def table(
        self, table: str, columns: list[str], snapshot_ids: Collection[str] | None = None
    ) -> pd.DataFrame:
        """``columns`` (with ids and times) of every committed file of ``table`` (of
        ``snapshot_ids`` only, when given)."""
        files = table_files(ft.Manifest.load(self.features_dir), table, snapshot_ids)
        stamp = tuple((str(p), p.stat().st_mtime_ns) for p in files if p.exists())
        key = (table, tuple(columns), stamp)
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        wanted = [ENTITY_KEY, *TIME_COLUMNS, *columns]
        tbl = ft.read_tables(files, columns=wanted)
        df = pd.DataFrame(columns=wanted) if tbl is None else tbl.to_pandas(types_mapper=None)
        for old in [k for k in self._tables if k[:2] == key[:2]]:
            del self._tables[old]
        self._tables[key] = df
        return df

    def features(
        self,
        entity_df: pd.DataFrame,
        info: ServiceInfo,
        snapshot_ids: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """Point-in-time correct features of ``info`` for each row of ``entity_df``.

        Exactly one row per entity row, same order, columns ``subject_id``, ``event_timestamp``
        (UTC) + the service's features; NaN where no value existed at that time. With
        ``snapshot_ids``, only the rows of those snapshots are candidates (a recorded
        snapshot set, read as it was whatever was built since).
        """
        ents = _entity_frame(entity_df)
        out: dict[str, Any] = {
            ENTITY_KEY: ents[ENTITY_KEY].to_numpy(),
            "event_timestamp": ents["event_timestamp"].to_numpy(),
        }
        by_view: dict[str, list[tuple[str, str]]] = {}
        for view, feat, kind in info.features:
            by_view.setdefault(view, []).append((feat, kind))
        for view, feats in by_view.items():
            fv = info.views[view]
            table = (fv.batch_source.tags or {}).get(TABLE_TAG)
            if not table:
                raise FeatureStoreError(f"view {view!r}: its source has no {TABLE_TAG!r} tag")
            cols = [f for f, _ in feats]
            rows = self.table(table, cols, snapshot_ids)
            joined = point_in_time_join(ents, rows, cols, ttl=fv.ttl)
            for f, kind in feats:
                out[f] = normalize_column(joined[f].to_numpy(), kind)
        result = pd.DataFrame(out, copy=False)
        result["event_timestamp"] = result["event_timestamp"].dt.tz_localize("UTC")
        return result[[ENTITY_KEY, "event_timestamp", *info.names]]


__all__ = ["OfflineReader", "snapshots_time", "table_files"]
