"""Arrow tables of a snapshot: window rows, labels, subject aggregates, participants.

Pure construction (arrays in, tables out; no file I/O). The columns are documented in
docs/features.md ("On-disk layout"). :class:`FileAggregates` collects, chunk by chunk, what the
per-subject aggregates of one input need.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import feature_tables as ft
from pipelines import quality
from pipelines.bandpower import BandpowerResult
from pipelines.hdf5_layout import WindowFileInfo
from pipelines.participants import LABEL_COLUMNS

#: Parquet metadata key -> what the window feature values are in.
UNITS = "abs_*: uV^2; logabs_*: log10(uV^2); rel_*: fraction of total power"


@dataclass(frozen=True)
class SnapshotStamp:
    """What every row of one snapshot carries besides its values."""

    snapshot_id: str
    event_timestamp: datetime
    created: datetime


@dataclass(frozen=True)
class ChunkFeatures:
    """Band-power features of windows ``start:stop`` of one input, and their quality flags."""

    start: int
    stop: int
    result: BandpowerResult
    entropy_mean: np.ndarray  # (n,) float32: mean over channels of the spectral entropy
    good: np.ndarray  # (n,) bool
    n_flat: np.ndarray  # (n,) flat channels per window


class FileAggregates:
    """Running per-subject sums over the good windows of one input (float64).

    Parameters
    ----------
    info : WindowFileInfo
        The input (its per-window subject ids and sizes).
    n_bands : int
        Bands of the features.
    """

    def __init__(self, info: WindowFileInfo, n_bands: int) -> None:
        codes, subjects = pd.factorize(pd.Series(info.subject_ids), sort=False)
        self.codes = codes.astype(np.int64)  # (n_windows,) index into subjects
        self.subjects = list(subjects)  # in order of first appearance
        n_subj = len(self.subjects)
        shape = (n_subj, info.n_channels, n_bands)
        self.sum_log, self.cnt_log = np.zeros(shape), np.zeros(shape, np.int64)
        self.sum_rel, self.cnt_rel = np.zeros(shape), np.zeros(shape, np.int64)
        self.sum_ent, self.cnt_ent = np.zeros(n_subj), np.zeros(n_subj, np.int64)
        self.n_windows = np.zeros(n_subj, np.int64)
        self.n_good = np.zeros(n_subj, np.int64)
        #: (n_windows, n_bands) channel-mean relative power of each window (for medians)
        self.chan_mean_rel = np.full((info.n_windows, n_bands), np.nan, np.float32)
        self.good = np.zeros(info.n_windows, bool)
        #: (n_windows,) median over non-flat channels of the total power (quality gates)
        self.window_power = np.full(info.n_windows, np.nan, np.float32)
        self.n_nonfinite_windows = 0
        self.n_flat_windows = 0

    def add(self, chunk: ChunkFeatures) -> None:
        """Count the windows of ``chunk`` and add its good windows to their subjects' sums."""
        r, good = chunk.result, chunk.good
        codes = self.codes[chunk.start : chunk.stop]
        self.n_nonfinite_windows += int(r.nonfinite.sum())
        self.n_flat_windows += int((chunk.n_flat > 0).sum())
        self.good[chunk.start : chunk.stop] = good
        self.window_power[chunk.start : chunk.stop] = quality.window_total_power(
            r.total_power, r.flat
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
            self.chan_mean_rel[chunk.start : chunk.stop] = np.nanmean(r.rel_power, axis=1)
        np.add.at(self.n_windows, codes, 1)
        np.add.at(self.n_good, codes[good], 1)
        for s in np.unique(codes[good]):
            m = good & (codes == s)
            for values, sums, counts in (
                (r.log_abs_power, self.sum_log, self.cnt_log),
                (r.rel_power, self.sum_rel, self.cnt_rel),
            ):
                block = values[m]
                ok = np.isfinite(block)
                sums[s] += np.where(ok, block, 0.0).sum(axis=0)
                counts[s] += ok.sum(axis=0)
            ent = r.spectral_entropy[m]
            ok = np.isfinite(ent)
            self.sum_ent[s] += ent[ok].sum(dtype=np.float64)
            self.cnt_ent[s] += int(ok.sum())

    def total_power(self) -> np.ndarray:
        """(n_subjects,): the ``total_power`` gate's statistic (uV^2; NaN when unmeasurable)."""
        return quality.subject_total_power(self.window_power, self.codes, len(self.subjects))

    def rel_median(self) -> np.ndarray:
        """(n_subjects, n_bands): median over good windows of the channel-mean relative power."""
        out = np.full((len(self.subjects), self.chan_mean_rel.shape[1]), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands
            for s in range(len(self.subjects)):
                m = self.good & (self.codes == s)
                if m.any():
                    out[s] = np.nanmedian(self.chan_mean_rel[m], axis=0)
        return out


def schema_metadata(info: WindowFileInfo, params: dict, stamp: SnapshotStamp, code: str) -> dict:
    """Parquet metadata of the window and subject feature files of one snapshot."""
    return {
        b"eegfs.channel_names": _json(info.channel_names),
        b"eegfs.bands": _json(params["bands"]),
        b"eegfs.params": _json(params),
        b"eegfs.snapshot_id": stamp.snapshot_id.encode(),
        b"eegfs.source": str(info.path.name).encode(),
        b"eegfs.code_version": code.encode(),
        b"eegfs.units": UNITS.encode(),
    }


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def window_schema(bands: list[str]) -> pa.Schema:
    """Schema of ``window_features`` for ``bands``."""
    fields = [
        pa.field("subject_id", pa.string()),
        pa.field("release", pa.string()),
        pa.field("challenge", pa.int8()),
        pa.field("window_index", pa.int64()),
        pa.field("event_timestamp", ft.TIMESTAMP),
        pa.field("created", ft.TIMESTAMP),
        pa.field("snapshot_id", pa.string()),
    ]
    for prefix in ("abs", "rel", "logabs"):
        fields += [pa.field(f"{prefix}_{b}", pa.list_(pa.float32())) for b in bands]
    fields += [
        pa.field("spectral_entropy", pa.list_(pa.float32())),
        pa.field("spectral_entropy_mean", pa.float32()),
        pa.field("good", pa.bool_()),
        pa.field("nonfinite", pa.bool_()),
        pa.field("n_flat_channels", pa.int16()),
    ]
    return pa.schema(fields)


def window_batch(
    info: WindowFileInfo, stamp: SnapshotStamp, bands: list[str], chunk: ChunkFeatures, schema
) -> pa.RecordBatch:
    """Rows of ``window_features`` for the windows of ``chunk``."""
    start, stop, r = chunk.start, chunk.stop, chunk.result
    n = stop - start
    cols = {
        "subject_id": pa.array(info.subject_ids[start:stop], pa.string()),
        "release": pa.array([info.release] * n, pa.string()),
        "challenge": pa.array(np.full(n, info.layout.challenge, np.int8)),
        "window_index": pa.array(np.arange(start, stop, dtype=np.int64)),
        "event_timestamp": ft.timestamp_array(stamp.event_timestamp, n),
        "created": ft.timestamp_array(stamp.created, n),
        "snapshot_id": pa.array([stamp.snapshot_id] * n, pa.string()),
    }
    for prefix, arr in (("abs", r.abs_power), ("rel", r.rel_power), ("logabs", r.log_abs_power)):
        for j, b in enumerate(bands):
            cols[f"{prefix}_{b}"] = ft.list_array(arr[:, :, j])
    cols["spectral_entropy"] = ft.list_array(r.spectral_entropy)
    cols["spectral_entropy_mean"] = pa.array(chunk.entropy_mean, pa.float32())
    cols["good"] = pa.array(chunk.good)
    cols["nonfinite"] = pa.array(r.nonfinite)
    cols["n_flat_channels"] = pa.array(chunk.n_flat.astype(np.int16))
    return pa.record_batch([cols[f.name] for f in schema], schema=schema)


def _common_columns(ids, release, challenge: int | None, stamp: SnapshotStamp) -> dict:
    n = len(ids)
    releases = [release] * n if isinstance(release, str) else list(release)
    cols = {
        "subject_id": pa.array(list(ids), pa.string()),
        "release": pa.array(releases, pa.string()),
    }
    if challenge is not None:  # participants tables belong to no challenge
        cols["challenge"] = pa.array(np.full(n, challenge, np.int8))
    cols["snapshot_id"] = pa.array([stamp.snapshot_id] * n, pa.string())
    cols["event_timestamp"] = ft.timestamp_array(stamp.event_timestamp, n)
    cols["created"] = ft.timestamp_array(stamp.created, n)
    return cols


def window_labels_table(info: WindowFileInfo, stamp: SnapshotStamp) -> pa.Table:
    """``window_labels``: the file's per-window labels."""
    cols = _common_columns(info.subject_ids, info.release, info.layout.challenge, stamp)
    cols["window_index"] = pa.array(np.arange(info.n_windows, dtype=np.int64))
    for name in sorted(info.labels):
        cols[name] = pa.array(info.labels[name], pa.float64())
    return pa.table(cols)


def rt_table(info: WindowFileInfo, agg: FileAggregates, stamp: SnapshotStamp) -> pa.Table:
    """``subject_rt_labels``: each subject's response-time mean, median and std (s)."""
    rt = info.labels["response_time"]
    n_subj = len(agg.subjects)
    stats = np.full((n_subj, 3), np.nan)
    n_rt = np.zeros(n_subj, np.int64)
    for s in range(n_subj):
        v = rt[(agg.codes == s) & np.isfinite(rt)]
        n_rt[s] = v.size
        if v.size:
            stats[s] = (v.mean(), np.median(v), v.std())
    cols = _common_columns(agg.subjects, info.release, info.layout.challenge, stamp)
    cols.update(
        rt_mean=pa.array(stats[:, 0]),
        rt_median=pa.array(stats[:, 1]),
        rt_std=pa.array(stats[:, 2]),
        n_rt_windows=pa.array(n_rt),
    )
    return pa.table(cols)


def subject_table(
    info: WindowFileInfo, agg: FileAggregates, stamp: SnapshotStamp, bands: list[str]
) -> pa.Table:
    """``subject_features``: the aggregates of docs/features.md, one row per subject."""
    cols = _common_columns(agg.subjects, info.release, info.layout.challenge, stamp)
    cols["source_file"] = pa.array([info.path.name] * len(agg.subjects), pa.string())
    cols["n_windows"] = pa.array(agg.n_windows)
    cols["n_good_windows"] = pa.array(agg.n_good)
    cols["good_fraction"] = pa.array((agg.n_good / np.maximum(agg.n_windows, 1)).astype(np.float32))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # subjects without good windows: NaN
        chan_log = agg.sum_log / agg.cnt_log  # (S, C, B)
        chan_rel = agg.sum_rel / agg.cnt_rel
        aggregates = {
            "logabs_mean": np.nanmean(chan_log, axis=1),
            "logabs_std": np.nanstd(chan_log, axis=1),
            "rel_mean": np.nanmean(chan_rel, axis=1),
            "rel_median": agg.rel_median(),
        }
        ent = agg.sum_ent / agg.cnt_ent
    for j, b in enumerate(bands):
        for name, values in aggregates.items():
            cols[f"{name}_{b}"] = pa.array(values[:, j].astype(np.float32))
    cols["spectral_entropy_mean"] = pa.array(ent.astype(np.float32))
    for j, b in enumerate(bands):
        cols[f"chan_rel_{b}"] = ft.list_array(chan_rel[:, :, j].astype(np.float32))
    return pa.table(cols)


def participants_tables(people: pd.DataFrame, stamp: SnapshotStamp) -> tuple[pa.Table, pa.Table]:
    """(``subject_demographics``, ``subject_labels``) of a read participants.tsv."""
    common = _common_columns(people["subject_id"], people["release"].astype(str), None, stamp)
    demographics = pa.table(
        {
            **common,
            "age": pa.array(people["age"], pa.float64()),
            "sex": pa.array(people["sex"], pa.string()),
            "ehq_total": pa.array(people["ehq_total"], pa.float64()),
        }
    )
    labels = pa.table({**common, **{c: pa.array(people[c], pa.float64()) for c in LABEL_COLUMNS}})
    return demographics, labels


__all__ = [
    "ChunkFeatures",
    "FileAggregates",
    "SnapshotStamp",
    "participants_tables",
    "rt_table",
    "schema_metadata",
    "subject_table",
    "window_batch",
    "window_labels_table",
    "window_schema",
]
