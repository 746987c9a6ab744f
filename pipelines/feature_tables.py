"""On-disk layout of the feature tables (the offline store) and their manifest.

Everything lives under ``settings.features_dir`` (``data/features`` by default)::

    manifest.json                                     committed snapshots (the source of truth)
    window_features/<challenge>/<snapshot_id>.parquet one row per window
    window_labels/<challenge>/<snapshot_id>.parquet   per-window labels (targets, response time)
    subject_features/<challenge>/<snapshot_id>.parquet one row per subject: band-power aggregates
    subject_rt_labels/challenge1/<snapshot_id>.parquet per-subject response-time label summaries
    subject_demographics/<snapshot_id>.parquet        age, sex, ehq_total from participants.tsv
    subject_labels/<snapshot_id>.parquet              p_factor, attention, internalizing, externalizing
    feast/registry.db                                 Feast registry (written by apply)

``<challenge>`` is ``challenge1`` or ``challenge2``. A snapshot's files are never rewritten by a
later snapshot (only ``--force`` rewrites a snapshot, keeping its ``event_timestamp``). Files are
written to a dot-prefixed temporary name in the same directory and renamed into place; readers
(pyarrow, pandas, dask, Feast) skip dot-files, and this package's own readers only read the files
that ``manifest.json`` lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import FeatureTableError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
LOCK_NAME = ".build.lock"

#: Tables written per HDF5 input, keyed by table name (a directory under features_dir).
WINDOW_FEATURES = "window_features"
WINDOW_LABELS = "window_labels"
SUBJECT_FEATURES = "subject_features"
SUBJECT_RT_LABELS = "subject_rt_labels"
#: Tables written per participants.tsv.
SUBJECT_DEMOGRAPHICS = "subject_demographics"
SUBJECT_LABELS = "subject_labels"
PER_CHALLENGE_TABLES = (WINDOW_FEATURES, WINDOW_LABELS, SUBJECT_FEATURES, SUBJECT_RT_LABELS)
PARTICIPANT_TABLES = (SUBJECT_DEMOGRAPHICS, SUBJECT_LABELS)

TIMESTAMP = pa.timestamp("us", tz="UTC")


def challenge_dir(challenge: int) -> str:
    return f"challenge{int(challenge)}"


def table_path(features_dir: Path, table: str, snapshot_id: str, challenge: int | None = None) -> Path:
    """Path of one snapshot's file of ``table``."""
    base = Path(features_dir) / table
    if challenge is not None:
        base = base / challenge_dir(challenge)
    return base / f"{snapshot_id}.parquet"


def utc_now() -> datetime:
    """Now, UTC, truncated to microseconds (the Parquet timestamp resolution)."""
    return datetime.now(UTC)


def file_sha256(path: Path, *, block: int = 8 << 20) -> str:
    """SHA-256 of a file's bytes (hashlib releases the GIL, so this may run in a thread)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def short_hash(obj) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_target(final: Path) -> Iterator[Path]:
    """Yield a dot-prefixed temporary path next to ``final``; rename into place on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table(table: pa.Table, final: Path) -> None:
    """Write ``table`` to ``final`` atomically (zstd-compressed Parquet)."""
    with atomic_target(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def remove_stale_temporaries(features_dir: Path, older_than_s: float = 0.0) -> int:
    """Delete temporary files a killed build left behind (call with the build lock held)."""
    n = 0
    now = time.time()
    for p in Path(features_dir).rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                n += 1
    return n


def list_array(values: np.ndarray) -> pa.ListArray:
    """(n, k) float32 array -> Arrow ``list<float32>`` of n lists of k (zero-copy values)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def timestamp_array(ts: datetime, n: int) -> pa.Array:
    return pa.array([ts] * n, type=TIMESTAMP)


@dataclass
class Manifest:
    """``manifest.json``: every committed snapshot, the channel order per challenge, hash cache.

    ``snapshots[id]`` holds: ``snapshot_id``, ``kind`` (``hdf5`` or ``participants``),
    ``challenge`` (1/2 or None), ``input`` (path, name, sha256, size), ``code_version``,
    ``params``, ``created``/``event_timestamp`` (ISO 8601 UTC), counts, ``release``,
    ``channels``, ``sfreq`` and ``files`` (table -> path relative to features_dir).
    """

    features_dir: Path
    snapshots: dict[str, dict] = field(default_factory=dict)
    channels: dict[str, list[str]] = field(default_factory=dict)
    hash_cache: dict[str, dict] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.features_dir) / MANIFEST_NAME

    @classmethod
    def load(cls, features_dir: Path) -> Manifest:
        path = Path(features_dir) / MANIFEST_NAME
        if not path.exists():
            return cls(Path(features_dir))
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FeatureTableError(
                f"{path}: unreadable manifest ({exc}); it lists the committed snapshots. Fix: "
                "restore it from a backup, or delete the features directory and rebuild"
            ) from exc
        if data.get("format") != MANIFEST_FORMAT:
            raise FeatureTableError(
                f"{path}: manifest format {data.get('format')!r}, expected {MANIFEST_FORMAT}; "
                "rebuild the features with this version (delete the directory first)"
            )
        return cls(
            Path(features_dir),
            snapshots=dict(data.get("snapshots", {})),
            channels=dict(data.get("channels", {})),
            hash_cache=dict(data.get("hash_cache", {})),
        )

    def save(self) -> None:
        data = {
            "format": MANIFEST_FORMAT,
            "snapshots": self.snapshots,
            "channels": self.channels,
            "hash_cache": self.hash_cache,
        }
        with atomic_target(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))

    def files(self, table: str, challenge: int | None = None) -> list[Path]:
        """Committed files of ``table`` (one challenge or all), oldest snapshot first."""
        rows = []
        for snap in self.snapshots.values():
            rel = snap.get("files", {}).get(table)
            if rel is None:
                continue
            if challenge is not None and snap.get("challenge") != challenge:
                continue
            rows.append((snap["event_timestamp"], snap["snapshot_id"], Path(self.features_dir) / rel))
        return [p for *_, p in sorted(rows)]

    def earliest_event_timestamp(self) -> datetime | None:
        stamps = [datetime.fromisoformat(s["event_timestamp"]) for s in self.snapshots.values()]
        return min(stamps) if stamps else None

    def store_snapshot_id(self) -> str | None:
        """Id of the whole set of committed snapshots (what a materialization serves)."""
        if not self.snapshots:
            return None
        return "fs_" + short_hash(sorted(self.snapshots))


def read_tables(paths: list[Path], columns: list[str] | None = None) -> pa.Table | None:
    """Concatenate Parquet files (``None`` when there are none)."""
    if not paths:
        return None
    try:
        tables = [pq.read_table(p, columns=columns) for p in paths]
    except (OSError, pa.ArrowException) as exc:
        raise FeatureTableError(
            f"reading feature tables failed: {exc}. A file listed in manifest.json is missing or "
            "corrupt; rebuild with `eegfs features build --force`"
        ) from exc
    return pa.concat_tables(tables, promote_options="default")


__all__ = [
    "MANIFEST_NAME",
    "PARTICIPANT_TABLES",
    "PER_CHALLENGE_TABLES",
    "SUBJECT_DEMOGRAPHICS",
    "SUBJECT_FEATURES",
    "SUBJECT_LABELS",
    "SUBJECT_RT_LABELS",
    "WINDOW_FEATURES",
    "WINDOW_LABELS",
    "Manifest",
    "atomic_target",
    "file_sha256",
    "list_array",
    "read_tables",
    "short_hash",
    "table_path",
    "utc_now",
    "write_table",
]
