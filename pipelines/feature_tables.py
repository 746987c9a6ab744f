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
later snapshot (only ``--force`` rewrites a snapshot, keeping its ``event_timestamp``).

A snapshot appears all at once (:class:`SnapshotStage`): its files are written under
``.staging/<snapshot_id>/`` (same layout as above; invisible to anything that reads a table
directory), fsynced, and a commit record ``.staging/<snapshot_id>/snapshot.json`` (the manifest
entry) is written atomically. Only then are the files renamed into their table directories,
the manifest is saved and the staging directory is removed. A build that dies before the record
leaves only a staging directory, which the next build deletes; one that dies after it is rolled
forward by the next build (or ``materialize``): the remaining renames, then the manifest. This
package's own readers only read the files that ``manifest.json`` lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from pipelines.errors import FeatureTableError
from services.files import atomic_write_text, fsync_dir, fsync_file, sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
LOCK_NAME = ".build.lock"
#: Directory (under features_dir) where snapshots are written before they are committed.
STAGING_NAME = ".staging"
#: Commit record of a staged snapshot: its manifest entry, written once every file is complete.
COMMIT_RECORD = "snapshot.json"

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


def table_path(
    features_dir: Path, table: str, snapshot_id: str, challenge: int | None = None
) -> Path:
    """Path of one snapshot's file of ``table``."""
    base = Path(features_dir) / table
    if challenge is not None:
        base = base / challenge_dir(challenge)
    return base / f"{snapshot_id}.parquet"


def short_hash(obj) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    ``channels``, ``sfreq``, ``files`` (table -> path relative to features_dir) and ``sha256``
    (table -> sha256 of that file, checked by ``eegfs runs reproduce``).
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
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))

    def files(self, table: str, challenge: int | None = None) -> list[Path]:
        """Committed files of ``table`` (one challenge or all), oldest snapshot first."""
        rows = []
        for snap in self.snapshots.values():
            rel = snap.get("files", {}).get(table)
            if rel is None:
                continue
            if challenge is not None and snap.get("challenge") != challenge:
                continue
            rows.append(
                (snap["event_timestamp"], snap["snapshot_id"], Path(self.features_dir) / rel)
            )
        return [p for *_, p in sorted(rows)]

    def earliest_event_timestamp(self) -> datetime | None:
        stamps = [datetime.fromisoformat(s["event_timestamp"]) for s in self.snapshots.values()]
        return min(stamps) if stamps else None

    def store_snapshot_id(self) -> str | None:
        """Id of the whole set of committed snapshots (what a materialization serves)."""
        if not self.snapshots:
            return None
        return "fs_" + short_hash(sorted(self.snapshots))


# --- all-or-nothing snapshots -------------------------------------------------------------------
class SnapshotStage:
    """The files of one snapshot, written privately and committed together.

    Use through :func:`staged_snapshot`. Files are written under
    ``<features_dir>/.staging/<snapshot_id>/`` with the same relative paths they will have in the
    store; :meth:`commit` fsyncs them, writes the commit record (the manifest entry) and then
    moves them into place and saves the manifest (see :func:`finish_staged`).
    """

    def __init__(self, features_dir: Path, snapshot_id: str):
        self.features_dir = Path(features_dir)
        self.snapshot_id = snapshot_id
        self.root = self.features_dir / STAGING_NAME / snapshot_id
        self.files: dict[str, str] = {}  # table -> path relative to features_dir (POSIX)
        self.recorded = False

    def path(self, table: str, challenge: int | None = None) -> Path:
        """Staged path of this snapshot's file of ``table`` (its parent directory exists)."""
        final = table_path(self.features_dir, table, self.snapshot_id, challenge)
        rel = final.relative_to(self.features_dir)
        self.files[table] = rel.as_posix()
        staged = self.root / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def write_table(self, table: str, data: pa.Table, challenge: int | None = None) -> None:
        """Stage ``data`` as this snapshot's file of ``table`` (zstd-compressed Parquet)."""
        pq.write_table(data, self.path(table, challenge), compression="zstd")

    def commit(self, manifest: Manifest, entry: dict) -> dict:
        """Make the snapshot visible and list it in ``manifest``; returns the stored entry.

        Once the commit record is written the snapshot is committed: if anything fails after
        that (a rename, the manifest write, a crash), the next :func:`finish_staged` completes
        it, so the staged files are then kept.
        """
        for rel in self.files.values():
            fsync_file(self.root / rel)
        for folder in {(self.root / rel).parent for rel in self.files.values()}:
            fsync_dir(folder)
        checksums = {table: sha256_file(self.root / rel) for table, rel in self.files.items()}
        entry = {
            **entry,
            "snapshot_id": self.snapshot_id,
            "files": dict(self.files),
            "sha256": checksums,
        }
        atomic_write_text(self.root / COMMIT_RECORD, json.dumps(entry, indent=1, sort_keys=True))
        self.recorded = True
        _roll_forward(manifest, self.root, entry)
        return entry

    def discard(self) -> None:
        """Delete the staged files (only before the commit record exists)."""
        if not self.recorded:
            _remove_stage(self.root)


@contextlib.contextmanager
def staged_snapshot(features_dir: Path, snapshot_id: str) -> Iterator[SnapshotStage]:
    """A :class:`SnapshotStage` for ``snapshot_id``; on an error before :meth:`~SnapshotStage.commit`
    wrote its record, everything staged is deleted and the store is left as it was.

    Call with the build lock held (the staging directory of ``snapshot_id`` is emptied first).
    """
    stage = SnapshotStage(features_dir, snapshot_id)
    shutil.rmtree(stage.root, ignore_errors=True)
    stage.root.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        stage.discard()
        raise


def _roll_forward(manifest: Manifest, root: Path, entry: dict) -> None:
    """Move a recorded snapshot's staged files into place, list it in the manifest, clean up.

    Idempotent: a file already moved (a crash between renames) is found in place.
    """
    features_dir = Path(manifest.features_dir)
    sid = entry["snapshot_id"]
    try:
        parents = set()
        for rel in entry["files"].values():
            staged, final = root / rel, features_dir / rel
            if staged.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
                parents.add(final.parent)
            elif not final.exists():
                raise FeatureTableError(
                    f"{root}: snapshot {sid} was recorded but its file {rel} is neither staged nor "
                    f"in place (deleted by hand?). Fix: delete {root} and rerun `eegfs features build`"
                )
        for folder in parents:
            fsync_dir(folder)
        if entry.get("kind") == "hdf5" and entry.get("challenge") is not None:
            manifest.channels.setdefault(challenge_dir(entry["challenge"]), list(entry["channels"]))
        manifest.snapshots[sid] = entry
        manifest.save()
    except OSError as exc:
        raise FeatureTableError(
            f"{features_dir}: committing snapshot {sid} failed after it was recorded in {root}: "
            f"{exc}. Fix the cause; the next `eegfs features build` completes the commit"
        ) from exc
    _remove_stage(root)


def _remove_stage(root: Path) -> None:
    """Delete a staging directory, and ``.staging`` itself once it is empty."""
    shutil.rmtree(root, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.parent.rmdir()


def finish_staged(manifest: Manifest) -> list[str]:
    """Complete or delete what an interrupted build left under ``.staging`` (build lock held).

    A staged snapshot with a commit record is rolled forward (remaining renames, then the
    manifest); one without is deleted. Returns the ids of the snapshots completed.
    """
    staging = Path(manifest.features_dir) / STAGING_NAME
    if not staging.is_dir():
        return []
    done = []
    for root in sorted(p for p in staging.iterdir() if p.is_dir()):
        record = root / COMMIT_RECORD
        try:
            entry = json.loads(record.read_text())
        except FileNotFoundError:
            entry = None
        except (OSError, ValueError) as exc:  # atomic_write_text never leaves half a record
            raise FeatureTableError(
                f"{record}: unreadable commit record ({exc}). Fix: delete {root} and rerun "
                "`eegfs features build`"
            ) from exc
        if entry is None:
            _remove_stage(root)  # never committed: the rerun rebuilds it
            continue
        if entry.get("snapshot_id") != root.name or not isinstance(entry.get("files"), dict):
            raise FeatureTableError(
                f"{record}: commit record of snapshot {entry.get('snapshot_id')!r} without a file "
                f"list, in the staging directory of {root.name!r}. Fix: delete {root} and rerun "
                "`eegfs features build`"
            )
        _roll_forward(manifest, root, entry)
        done.append(root.name)
    return done


def build_lock(features_dir: Path, timeout: float = 30) -> FileLock:
    """The lock every writer of ``features_dir`` holds (``.build.lock``)."""
    return FileLock(str(Path(features_dir) / LOCK_NAME), timeout=timeout)


def finish_interrupted_build(features_dir: Path) -> list[str]:
    """:func:`finish_staged` for readers of table directories (``materialize``).

    Does nothing when there is nothing staged or when a build holds the lock (that build did it
    when it started). Returns the ids of the snapshots completed.
    """
    if not (Path(features_dir) / STAGING_NAME).is_dir():
        return []
    lock = build_lock(features_dir, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return []
    try:
        return finish_staged(Manifest.load(features_dir))
    finally:
        lock.release()


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
    "SnapshotStage",
    "build_lock",
    "finish_interrupted_build",
    "finish_staged",
    "list_array",
    "read_tables",
    "short_hash",
    "staged_snapshot",
    "table_path",
]
