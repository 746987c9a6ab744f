"""The Parquet files of a prediction: one row per window, and one row per subject beside it.

``OUT.parquet`` (windows): ``subject_id`` (str), ``window_index`` (int64, the row in the input
file), ``prediction`` (float64, the target's unit) and ``target`` (float64, NaN where missing)
when the file has the model's target. ``OUT.subjects.parquet`` (subjects): ``subject_id``,
``n_windows``, ``prediction`` (the mean over the subject's windows: the subject-level
aggregation of training's evaluation, :func:`training.metrics.subject_means`),
``feature_source`` (snapshot / online / pushed / missing, or ``none`` for a model without
features) and ``target`` when the file has one. Both are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.metrics import subject_means


def subjects_path(out: str | Path) -> Path:
    """``PATH.subjects.parquet`` beside the windows file ``PATH.parquet``."""
    out = Path(out)
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(f"{stem}.subjects.parquet")


def default_out(data_dir: str | Path, h5_path: str | Path, name: str, version: int) -> Path:
    """``<data_dir>/predictions/<file stem>.<model>-v<version>.parquet``."""
    return Path(data_dir) / "predictions" / f"{Path(h5_path).stem}.{name}-v{version}.parquet"


def window_table(
    subjects: np.ndarray, rows: np.ndarray, predictions: np.ndarray, targets: np.ndarray | None
) -> pa.Table:
    """One row per window (see the module docstring)."""
    columns = {
        "subject_id": pa.array(np.asarray(subjects).astype(str).tolist(), pa.string()),
        "window_index": pa.array(np.asarray(rows, dtype=np.int64)),
        "prediction": pa.array(np.asarray(predictions, dtype=np.float64)),
    }
    if targets is not None:
        columns["target"] = pa.array(np.asarray(targets, dtype=np.float64))
    return pa.table(columns)


def subject_table(
    subjects: np.ndarray,
    predictions: np.ndarray,
    targets: np.ndarray | None,
    sources: Mapping[str, str],
) -> pa.Table:
    """One row per subject, sorted by id: mean prediction (and target) over its windows."""
    ids, means = subject_means(predictions, subjects)
    _, counts = np.unique(np.asarray(subjects).astype(str), return_counts=True)
    columns = {
        "subject_id": pa.array(ids.tolist(), pa.string()),
        "n_windows": pa.array(counts.astype(np.int64)),
        "prediction": pa.array(means),
        "feature_source": pa.array([sources.get(s, "none") for s in ids.tolist()], pa.string()),
    }
    if targets is not None:
        columns["target"] = pa.array(subject_means(targets, subjects)[1])
    return pa.table(columns)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` atomically (a temporary file, then a rename)."""
    from services.files import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


__all__ = ["default_out", "subject_table", "subjects_path", "window_table", "write_table"]
