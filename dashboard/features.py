"""Data of the Features page: snapshots, what Redis serves, distributions, drift, topography,
band-power profiles, window quality and the data-quality report of the last build.

Everything comes from the offline store's ``manifest.json`` and the subject feature tables it
lists (Parquet, read with pyarrow), and from the materialization marker in Redis. Subject
features are the store's per-subject aggregates (one row per subject and snapshot); where a
subject has several snapshots of one release (an input rebuilt), the newest is used.

Drift between two releases is measured per feature over subjects with the standardized mean
difference ``SMD = (mean_b - mean_a) / sqrt((var_a + var_b) / 2)`` and the two-sample
Kolmogorov-Smirnov statistic ``D`` (:func:`scipy.stats.ks_2samp`). A feature is flagged when
``|SMD| > DRIFT_SMD_THRESHOLD`` (0.25, the usual "substantial imbalance" bound for
standardized differences) or ``D > DRIFT_KS_THRESHOLD`` (0.3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dashboard import sources
from pipelines.quality_report import REPORT_NAME, load_report, rejected_rows

DRIFT_SMD_THRESHOLD = 0.25
DRIFT_KS_THRESHOLD = 0.3
#: Bands in the order the pipeline writes them (delta..gamma); read from the columns present.
BAND_ORDER = ("delta", "theta", "alpha", "beta", "gamma")
#: Columns of the subject table that identify a row rather than measure something.
ID_COLUMNS = (
    "subject_id",
    "release",
    "snapshot_id",
    "event_timestamp",
    "created",
    "challenge",
    "source_file",
)
SNAPSHOT_COLUMNS = [
    "snapshot_id",
    "kind",
    "challenge",
    "release",
    "input",
    "input_sha256",
    "tables",
    "windows",
    "subjects",
    "good_windows",
    "created",
    "event_timestamp",
    "served",
]


def snapshots_frame(features_dir: Path, served_ids: Sequence[str] = ()) -> pd.DataFrame:
    """Committed snapshots on disk, newest first, with rows per table and whether Redis serves
    them (``served``: listed in the marker's ``snapshot_ids``)."""
    manifest = sources.Manifest.load(Path(features_dir))
    served = set(served_ids)
    rows = []
    for sid, s in manifest.snapshots.items():
        source = s.get("input") or {}
        participants = s.get("kind") == "participants"
        rows.append(
            {
                "snapshot_id": sid,
                "kind": s.get("kind"),
                "challenge": s.get("challenge"),
                "release": s.get("release"),
                "input": source.get("name") or source.get("path"),
                "input_sha256": source.get("sha256"),
                "tables": ", ".join(sorted(s.get("files") or {})),
                "windows": None if participants else s.get("n_windows"),
                "subjects": s.get("n_subjects"),
                "good_windows": s.get("n_good_windows"),
                "created": s.get("created"),
                "event_timestamp": s.get("event_timestamp"),
                "served": sid in served,
            }
        )
    df = pd.DataFrame(rows, columns=SNAPSHOT_COLUMNS)
    for column in ("created", "event_timestamp"):
        df[column] = pd.to_datetime(df[column], utc=True)
    return df.sort_values("created", ascending=False, ignore_index=True)


def online_markers(redis) -> list[dict[str, Any]]:
    """The online store's materialization markers (one per Feast project), newest first.

    Each: ``key``, ``store_snapshot_id``, ``snapshot_ids``, ``materialized_at``, ``end``.
    Raises the Redis error when Redis does not answer (the page says so).
    """
    markers = []
    for key in redis.scan_iter(match=sources.online_marker_pattern(), count=100):
        raw = redis.get(key)
        if raw is None:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = {"error": "not JSON"}
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        markers.append({"key": name, **(value if isinstance(value, dict) else {})})
    markers.sort(key=lambda m: str(m.get("materialized_at") or ""), reverse=True)
    return markers


def subject_table(features_dir: Path, challenge: int) -> pd.DataFrame:
    """Subject features of one challenge (newest snapshot per subject and release).

    Columns: ``subject_id``, ``release``, ``snapshot_id``, ``created``, the scalar features and
    the per-channel list features (``chan_rel_<band>``: arrays in the manifest's channel order).
    """
    manifest = sources.Manifest.load(Path(features_dir))
    table = sources.read_tables(manifest.files(sources.SUBJECT_FEATURES, challenge=int(challenge)))
    if table is None:
        return pd.DataFrame(columns=["subject_id", "release", "snapshot_id", "created"])
    df = table.to_pandas()
    df = df.sort_values(["created", "snapshot_id"]).drop_duplicates(
        ["subject_id", "release"], keep="last"
    )
    return df.sort_values(["release", "subject_id"], ignore_index=True)


def channel_names(features_dir: Path, challenge: int) -> list[str]:
    """Channel order of a challenge's feature tables (from the newest snapshot of it)."""
    manifest = sources.Manifest.load(Path(features_dir))
    entries = [
        s
        for s in manifest.snapshots.values()
        if s.get("challenge") == int(challenge) and s.get("channels")
    ]
    if not entries:
        return []
    newest = max(entries, key=lambda s: str(s.get("created")))
    return [str(c) for c in newest["channels"]]


def scalar_features(subjects: pd.DataFrame) -> list[str]:
    """Names of the numeric scalar feature columns of a subject table."""
    names = []
    for column in subjects.columns:
        if column in ID_COLUMNS or column.startswith("chan_"):
            continue
        if pd.api.types.is_numeric_dtype(subjects[column]) and not pd.api.types.is_bool_dtype(
            subjects[column]
        ):
            names.append(column)
    return names


def bands(subjects: pd.DataFrame) -> list[str]:
    """Bands present as ``chan_rel_<band>`` columns, in pipeline order."""
    present = {c.removeprefix("chan_rel_") for c in subjects.columns if c.startswith("chan_rel_")}
    return [b for b in BAND_ORDER if b in present] + sorted(present - set(BAND_ORDER))


def distribution_frame(subjects: pd.DataFrame, feature: str) -> pd.DataFrame:
    """``release``, ``subject_id`` and ``value`` of one feature (finite values only)."""
    if feature not in subjects.columns:
        raise KeyError(f"feature {feature!r} is not a column of the subject features")
    df = subjects[["release", "subject_id", feature]].rename(columns={feature: "value"})
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df[np.isfinite(df["value"])].reset_index(drop=True)


def drift_table(
    subjects: pd.DataFrame, reference: str, other: str, features: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per feature: means, SMD and KS statistic between two releases, flagged above threshold.

    Columns: ``feature``, ``n_ref``, ``n_other``, ``mean_ref``, ``mean_other``, ``smd``,
    ``ks``, ``ks_pvalue``, ``flagged``; sorted by ``|smd|`` then ``ks``, largest first.
    """
    from scipy.stats import ks_2samp

    names = list(features) if features is not None else scalar_features(subjects)
    a_all = subjects[subjects["release"] == reference]
    b_all = subjects[subjects["release"] == other]
    rows = []
    for name in names:
        a = _finite(a_all[name])
        b = _finite(b_all[name])
        smd, ks, pvalue = math.nan, math.nan, math.nan
        if a.size >= 2 and b.size >= 2:
            pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
            diff = float(b.mean() - a.mean())
            smd = (
                diff / pooled
                if pooled > 0
                else (0.0 if diff == 0 else math.copysign(math.inf, diff))
            )
            result = ks_2samp(a, b)
            ks, pvalue = float(result.statistic), float(result.pvalue)
        rows.append(
            {
                "feature": name,
                "n_ref": int(a.size),
                "n_other": int(b.size),
                "mean_ref": float(a.mean()) if a.size else math.nan,
                "mean_other": float(b.mean()) if b.size else math.nan,
                "smd": smd,
                "ks": ks,
                "ks_pvalue": pvalue,
                "flagged": bool(abs(smd) > DRIFT_SMD_THRESHOLD or ks > DRIFT_KS_THRESHOLD),
            }
        )
    df = pd.DataFrame(
        rows,
        columns=[
            "feature",
            "n_ref",
            "n_other",
            "mean_ref",
            "mean_other",
            "smd",
            "ks",
            "ks_pvalue",
            "flagged",
        ],
    )
    order = df.assign(_a=df["smd"].abs().fillna(-1), _k=df["ks"].fillna(-1))
    return df.loc[order.sort_values(["_a", "_k"], ascending=False).index].reset_index(drop=True)


def _finite(values: pd.Series) -> np.ndarray:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


def topography(
    subjects: pd.DataFrame, subject_id: str, release: str, channels: Sequence[str]
) -> pd.DataFrame:
    """Per-channel relative band power of one subject: index = channel, one column per band.

    From the subject's ``chan_rel_<band>`` lists (channel order of the feature tables); NaN
    where a channel was flat (Cz, the reference, always is).
    """
    row = _subject_row(subjects, subject_id, release)
    data = {}
    for band in bands(subjects):
        values = np.asarray(row[f"chan_rel_{band}"], dtype=np.float64)
        if values.shape != (len(channels),):
            raise ValueError(
                f"chan_rel_{band} of {subject_id} ({release}) has {values.size} values but the "
                f"feature tables list {len(channels)} channels; rebuild the features"
            )
        data[band] = values
    return pd.DataFrame(data, index=pd.Index(list(channels), name="channel"))


def _subject_row(subjects: pd.DataFrame, subject_id: str, release: str) -> pd.Series:
    found = subjects[(subjects["subject_id"] == subject_id) & (subjects["release"] == release)]
    if found.empty:
        raise KeyError(f"no features for subject {subject_id} in release {release}")
    return found.iloc[-1]


def band_profile(subjects: pd.DataFrame, subject_id: str, release: str) -> pd.DataFrame:
    """Relative band power (channel mean) of one subject against its release.

    Index = band; columns ``subject``, ``release_mean``, ``release_std``, ``z`` (the subject's
    distance from the release mean in standard deviations).
    """
    row = _subject_row(subjects, subject_id, release)
    peers = subjects[subjects["release"] == release]
    rows = {}
    for band in bands(subjects) or [
        c.removeprefix("rel_mean_") for c in subjects.columns if c.startswith("rel_mean_")
    ]:
        column = f"rel_mean_{band}"
        if column not in subjects.columns:
            continue
        values = _finite(peers[column])
        mean = float(values.mean()) if values.size else math.nan
        std = float(values.std(ddof=1)) if values.size > 1 else math.nan
        value = float(row[column])
        rows[band] = {
            "subject": value,
            "release_mean": mean,
            "release_std": std,
            "z": (value - mean) / std if std and math.isfinite(std) and std > 0 else math.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("band")


def quality_frame(subjects: pd.DataFrame) -> pd.DataFrame:
    """Window quality per subject and release: windows, good, flagged, good fraction.

    Sorted with the most flagged windows first.
    """
    columns = ["subject_id", "release", "n_windows", "n_good_windows", "flagged", "good_fraction"]
    if subjects.empty or "n_windows" not in subjects.columns:
        return pd.DataFrame(columns=columns)
    df = subjects[["subject_id", "release", "n_windows", "n_good_windows"]].copy()
    df["n_windows"] = df["n_windows"].astype(int)
    df["n_good_windows"] = df["n_good_windows"].astype(int)
    df["flagged"] = df["n_windows"] - df["n_good_windows"]
    df["good_fraction"] = df["n_good_windows"] / df["n_windows"].where(df["n_windows"] > 0)
    return df[columns].sort_values(
        ["flagged", "subject_id"], ascending=[False, True], ignore_index=True
    )


REJECTED_COLUMNS = [
    "subject_id",
    "challenge",
    "input",
    "decision",
    "good_fraction",
    "total_power_uv2",
    "reasons",
    "snapshot_id",
]


def build_quality(features_dir: Path) -> dict[str, Any] | None:
    """The data-quality report of the last ``eegfs features build`` (``eegfs features
    quality``), or None when no build has written one: a summary, one row per input and one
    per subject that failed a gate (held back, or accepted with ``--accept-failing``)."""
    if not (Path(features_dir) / REPORT_NAME).exists():
        return None
    document = load_report(features_dir)
    inputs = pd.DataFrame(
        [
            {
                "input": Path(item["path"]).name,
                "challenge": item.get("challenge"),
                "status": item["status"],
                "snapshot_id": item["snapshot_id"],
                "subjects": (item.get("quality") or {}).get("n_subjects", item.get("n_subjects")),
                "served": (item.get("quality") or {}).get("n_promoted", item.get("n_subjects")),
                "held_back": (item.get("quality") or {}).get("n_held_back", 0),
            }
            for item in document.get("inputs", [])
        ]
    )
    rejected = pd.DataFrame(
        [
            {
                **row,
                "input": Path(row["path"]).name,
                "decision": _decision(row),
                "reasons": "; ".join(row.get("reasons") or []),
            }
            for row in rejected_rows(document)
        ],
        columns=[*REJECTED_COLUMNS, "path"],
    )
    return {
        "finished_at": document.get("finished_at"),
        "n_held_back": document.get("n_held_back", 0),
        "n_accepted": document.get("n_accepted", 0),
        "accept_failing": bool(document.get("accept_failing")),
        "inputs": inputs,
        "rejected": rejected[rejected["reasons"] != ""][REJECTED_COLUMNS],
    }


def _decision(row: dict) -> str:
    if not row.get("promoted"):
        return "held back"
    return "accepted" if row.get("reasons") else "served"
