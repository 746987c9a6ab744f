"""One input -> one snapshot: identity (hashes, snapshot ids), computation and the staged commit.

A window file's snapshot id depends on the file's SHA-256, which may still be being computed in
a background thread when the features are: rows are held back until the id is known, and the
work is dropped if that snapshot turns out to exist already (see :func:`build_window_snapshot`).
Every file of a snapshot is staged and committed together (:func:`pipelines.feature_tables.staged_snapshot`).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import build_tables as bt
from pipelines import feature_tables as ft
from pipelines import promotion
from pipelines import quality as q
from pipelines.bandpower import BandpowerParams, WelchPlan, window_quality
from pipelines.hdf5_io import H5Windows
from services.files import sha256_file

if TYPE_CHECKING:
    from pipelines.build import BuildOptions

#: Bump when the meaning of any feature or of a subject id changes: every input then gets a new
#: snapshot. 2: HBN ids are canonically upper case (services.ids), the quality gates hold back
#: failing rows (pipelines.quality).
FEATURE_CODE_VERSION = "2"
#: Read size when hashing inputs (large reads: the hash runs beside the computation).
HASH_CHUNK = 8 << 20


@dataclass
class FileResult:
    """What happened to one input."""

    path: Path
    snapshot_id: str
    status: str  # "built", "rebuilt" (force) or "skipped"
    challenge: int | None = None
    n_windows: int = 0
    n_subjects: int = 0
    n_good_windows: int = 0
    n_nonfinite_windows: int = 0
    n_flat_windows: int = 0
    seconds: float = 0.0
    #: the gates' decision (computed inputs), or the re-evaluation of rows held back earlier
    quality: promotion.QualityOutcome | None = None


# --- identity -----------------------------------------------------------------------------------
def participants_snapshot_id(sha256: str) -> str:
    """Snapshot id of a participants.tsv with this SHA-256."""
    return "participants_" + ft.short_hash({"sha256": sha256, "code": FEATURE_CODE_VERSION})


def window_snapshot_id(
    w: H5Windows, sha256: str, params: BandpowerParams, max_flat_fraction: float
) -> str:
    """Snapshot id of window file ``w`` (content hash ``sha256``) computed with these options."""
    identity = {
        "sha256": sha256,
        "code": FEATURE_CODE_VERSION,
        "params": params.to_dict(),
        "max_flat_fraction": max_flat_fraction,
        "layout": {
            "data": w.layout.data,
            "subjects": w.layout.subjects,
            "labels": dict(w.layout.labels),
            "challenge": w.layout.challenge,
        },
        "sfreq": w.sfreq,
        "channels": w.channel_names,
    }
    return f"{ft.challenge_dir(w.layout.challenge)}_{ft.short_hash(identity)}"


def cached_sha256(manifest: ft.Manifest, path: Path) -> str | None:
    """The manifest's SHA-256 of ``path`` when its size and mtime are unchanged, else None."""
    st = path.stat()
    cached = manifest.hash_cache.get(str(path))
    if cached and cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
        return cached["sha256"]
    return None


def hash_file(path: Path) -> tuple[str, int, int]:
    """(SHA-256, size, mtime_ns) of ``path``."""
    st = path.stat()
    return sha256_file(path, chunk=HASH_CHUNK), st.st_size, st.st_mtime_ns


def skipped_result(w: H5Windows, snapshot_id: str, old: dict) -> FileResult:
    """The result of an input whose snapshot ``old`` is already committed."""
    return FileResult(
        w.path,
        snapshot_id,
        "skipped",
        w.layout.challenge,
        old.get("n_windows", 0),
        old.get("n_subjects", 0),
        old.get("n_good_windows", 0),
    )


# --- participants.tsv ---------------------------------------------------------------------------
def build_participants_snapshot(
    features_dir: Path, manifest: ft.Manifest, path: Path, people: pd.DataFrame, force: bool
) -> FileResult:
    """Snapshot of participants.tsv ``path`` (read into ``people``) unless it exists already."""
    sha = sha256_file(path, chunk=HASH_CHUNK)
    sid = participants_snapshot_id(sha)
    old = manifest.snapshots.get(sid)
    if old is not None and not force:
        return FileResult(path, sid, "skipped", n_subjects=len(people))
    created = datetime.now(UTC)
    stamp = bt.SnapshotStamp(
        sid, datetime.fromisoformat(old["event_timestamp"]) if old else created, created
    )
    demographics, labels = bt.participants_tables(people, stamp)
    with ft.staged_snapshot(features_dir, sid) as stage:
        stage.write_table(ft.SUBJECT_DEMOGRAPHICS, demographics)
        stage.write_table(ft.SUBJECT_LABELS, labels)
        stage.commit(
            manifest,
            {
                "kind": "participants",
                "challenge": None,
                "input": {"path": str(path.resolve()), "name": path.name, "sha256": sha},
                "code_version": FEATURE_CODE_VERSION,
                "params": {},
                "created": created.isoformat(),
                "event_timestamp": stamp.event_timestamp.isoformat(),
                "n_subjects": len(people),
            },
        )
    return FileResult(path, sid, "rebuilt" if old else "built", n_subjects=len(people))


# --- window files -------------------------------------------------------------------------------
def default_workers() -> int:
    """Reader threads when none are given: CPU count + 1, at most 8."""
    return min(8, (os.cpu_count() or 2) + 1)


def compute_chunk(
    plan: WelchPlan, w: H5Windows, start: int, x: np.ndarray, max_flat_fraction: float
) -> bt.ChunkFeatures:
    """Features and quality flags of windows ``x`` (``start`` = index of the first, volts)."""
    r = plan.compute(x, to_uv=w.to_uv, overwrite=True)
    n_flat, good = window_quality(r, w.reference_mask, max_flat_fraction=max_flat_fraction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        ent_mean = np.nanmean(r.spectral_entropy, axis=1).astype(np.float32)
    return bt.ChunkFeatures(start, start + x.shape[0], r, ent_mean, good, n_flat)


@dataclass(frozen=True)
class _Identity:
    sha256: str
    old: dict | None  # the committed snapshot of that id, if any
    stamp: bt.SnapshotStamp


class _WindowSnapshot:
    """The snapshot of one window file being built (see :func:`build_window_snapshot`)."""

    def __init__(
        self, features_dir: Path, manifest: ft.Manifest, w: H5Windows, opts: BuildOptions
    ) -> None:
        self.features_dir, self.manifest, self.w, self.opts = features_dir, manifest, w, opts
        self.bands = opts.params.band_names
        self.created = datetime.now(UTC)
        self.aggregates = bt.FileAggregates(w, len(self.bands))
        self.pending: list[bt.ChunkFeatures] = []  # computed, waiting for the snapshot id
        self.identity: _Identity | None = None
        self.stage: ft.SnapshotStage | None = None
        self.writer: pq.ParquetWriter | None = None
        self.metadata: dict = {}
        self.quality: promotion.QualityOutcome | None = None

    def run(self, sha_future: Future, bar) -> FileResult:
        t0 = time.perf_counter()
        opts, w = self.opts, self.w
        plan = WelchPlan(opts.params, w.sfreq, w.n_times)
        with contextlib.ExitStack() as stack:
            chunks = w.iter_chunks(
                opts.chunk_windows,
                workers=opts.workers or default_workers(),
                direct=opts.direct_chunks,
            )
            stack.callback(chunks.close)
            for start, x in chunks:
                chunk = compute_chunk(plan, w, start, x, opts.max_flat_fraction)
                self.aggregates.add(chunk)
                self.pending.append(chunk)
                bar.update(chunk.stop - start)
                if (sha_future.done() or self.writer is not None) and not self._flush(
                    stack, sha_future
                ):
                    bar.update(w.n_windows - chunk.stop)
                    return self._skipped()
            if not self._flush(stack, sha_future):
                return self._skipped()
            self._commit()
        return self._result(time.perf_counter() - t0)

    def _resolve(self, sha_future: Future) -> _Identity:
        """Learn the snapshot id from the input's hash (and cache the hash in the manifest)."""
        sha, size, mtime_ns = sha_future.result()
        w = self.w
        self.manifest.hash_cache[str(w.path)] = {"size": size, "mtime_ns": mtime_ns, "sha256": sha}
        sid = window_snapshot_id(w, sha, self.opts.params, self.opts.max_flat_fraction)
        old = self.manifest.snapshots.get(sid)
        event_ts = datetime.fromisoformat(old["event_timestamp"]) if old else self.created
        return _Identity(sha, old, bt.SnapshotStamp(sid, event_ts, self.created))

    def _flush(self, stack: contextlib.ExitStack, sha_future: Future) -> bool:
        """Write the pending rows, opening the staged snapshot first if needed.

        Returns False (and writes nothing) when the snapshot already exists and is not forced.
        """
        if self.writer is None:
            self.identity = self._resolve(sha_future)
            if self.identity.old is not None and not self.opts.force:
                return False
            self._open(stack, self.identity.stamp)
        for chunk in self.pending:
            self.writer.write_batch(
                bt.window_batch(self.w, self.identity.stamp, self.bands, chunk, self.writer.schema)
            )
        self.pending.clear()
        return True

    def _open(self, stack: contextlib.ExitStack, stamp: bt.SnapshotStamp) -> None:
        params = self.opts.params.to_dict()
        self.metadata = bt.schema_metadata(self.w, params, stamp, FEATURE_CODE_VERSION)
        schema = bt.window_schema(self.bands).with_metadata(self.metadata)
        # every file of the snapshot is staged; all appear together at the commit
        self.stage = stack.enter_context(ft.staged_snapshot(self.features_dir, stamp.snapshot_id))
        # dictionary encoding only for the repeated strings: trying it on float lists costs 4x
        self.writer = stack.enter_context(
            pq.ParquetWriter(
                self.stage.path(ft.WINDOW_FEATURES, self.w.layout.challenge),
                schema,
                compression="snappy",
                use_dictionary=["subject_id", "release", "snapshot_id"],
                write_statistics=False,
            )
        )

    def _commit(self) -> None:
        """Stage the remaining tables (gated ones split by the quality gates) and commit."""
        w, agg, stamp, stage = self.w, self.aggregates, self.identity.stamp, self.stage
        challenge = w.layout.challenge
        self.writer.close()
        stage.write_table(ft.WINDOW_LABELS, bt.window_labels_table(w, stamp), challenge)
        subj = bt.subject_table(w, agg, stamp, self.bands)
        subj = subj.replace_schema_metadata({**self.metadata, **(subj.schema.metadata or {})})
        promoted, section = self._decide(subj)
        if "response_time" in w.labels:
            rt = bt.rt_table(w, agg, stamp)
            promotion.stage_gated(stage, ft.SUBJECT_RT_LABELS, rt, promoted, challenge)
        promotion.stage_gated(stage, ft.SUBJECT_FEATURES, subj, promoted, challenge)
        entry = stage.commit(self.manifest, {**self._manifest_entry(), "quality": section})
        self.quality = promotion.outcome_from_section(self.manifest, entry["snapshot_id"])

    def _decide(self, subj: pa.Table) -> tuple[list[str], dict]:
        """The subjects promoted by the quality gates, and the manifest's ``quality`` section.

        A ``--force`` rebuild keeps the promotion decisions of the snapshot it rewrites.
        """
        w, opts, old = self.w, self.opts, self.identity.old
        scalars = [f.name for f in subj.schema if not pa.types.is_list(f.type)]
        frame = subj.select(scalars).to_pandas()
        frame[q.TOTAL_POWER_COLUMN] = self.aggregates.total_power()
        sid = self.identity.stamp.snapshot_id
        reference = promotion.store_reference(self.manifest, w.layout.challenge, exclude=sid)
        decision, promoted = promotion.decide_new(
            frame,
            q.check_file(w.n_channels, w.sfreq, reference),
            opts.thresholds,
            opts.accept_failing,
            kept_back=promotion.recorded_held_back(old) if old is not None else None,
        )
        previous = (old or {}).get("quality")
        section = promotion.quality_section(
            decision, promoted, frame, opts.thresholds, reference, previous
        )
        return promoted, section

    def _manifest_entry(self) -> dict:
        w, agg, ident = self.w, self.aggregates, self.identity
        return {
            "kind": "hdf5",
            "challenge": w.layout.challenge,
            "layout": w.layout.name,
            "input": {
                "path": str(w.path),
                "name": w.path.name,
                "sha256": ident.sha256,
                "size": w.path.stat().st_size,
            },
            "code_version": FEATURE_CODE_VERSION,
            "params": {
                **self.opts.params.to_dict(),
                "max_flat_fraction": self.opts.max_flat_fraction,
            },
            "created": self.created.isoformat(),
            "event_timestamp": ident.stamp.event_timestamp.isoformat(),
            "release": w.release,
            "sfreq": w.sfreq,
            "n_times": w.n_times,
            "channels": list(w.channel_names),
            "n_windows": w.n_windows,
            "n_subjects": len(agg.subjects),
            "n_good_windows": int(agg.good.sum()),
            "n_nonfinite_windows": agg.n_nonfinite_windows,
            "n_flat_windows": agg.n_flat_windows,
        }

    def _skipped(self) -> FileResult:
        return skipped_result(self.w, self.identity.stamp.snapshot_id, self.identity.old)

    def _result(self, seconds: float) -> FileResult:
        agg = self.aggregates
        return FileResult(
            path=self.w.path,
            snapshot_id=self.identity.stamp.snapshot_id,
            status="rebuilt" if self.identity.old else "built",
            challenge=self.w.layout.challenge,
            n_windows=self.w.n_windows,
            n_subjects=len(agg.subjects),
            n_good_windows=int(agg.good.sum()),
            n_nonfinite_windows=agg.n_nonfinite_windows,
            n_flat_windows=agg.n_flat_windows,
            seconds=seconds,
            quality=self.quality,
        )


def build_window_snapshot(
    features_dir: Path,
    manifest: ft.Manifest,
    w: H5Windows,
    sha_future: Future,
    opts: BuildOptions,
    bar,
) -> FileResult:
    """Compute the features of window file ``w`` and commit them as one snapshot.

    Parameters
    ----------
    features_dir : Path
        The offline store.
    manifest : feature_tables.Manifest
        Loaded with the build lock held; the commit adds the snapshot (and ``w``'s hash).
    w : H5Windows
        The open, validated input.
    sha_future : Future
        Resolves to ``(sha256, size, mtime_ns)`` of the input; the computation starts before it
        does, and the rows are written once it has.
    opts : BuildOptions
    bar : tqdm
        Advanced by the windows computed (to the end when the input is skipped).

    Returns
    -------
    FileResult
        ``skipped`` (the snapshot exists and ``opts.force`` is off: nothing written),
        ``built`` or ``rebuilt``.
    """
    return _WindowSnapshot(features_dir, manifest, w, opts).run(sha_future, bar)


__all__ = [
    "FEATURE_CODE_VERSION",
    "FileResult",
    "build_participants_snapshot",
    "build_window_snapshot",
    "cached_sha256",
    "hash_file",
    "participants_snapshot_id",
    "skipped_result",
    "window_snapshot_id",
]
