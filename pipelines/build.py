"""Build the feature tables: HDF5 windows + participants.tsv -> Parquet snapshots.

One snapshot per input file (id from the file's SHA-256, the feature code version and the
parameters) and one per participants.tsv. An input whose snapshot is already committed in
``manifest.json`` is skipped; a changed input adds a new snapshot next to the old one;
``force=True`` recomputes and rewrites existing snapshots (keeping their ``event_timestamp``).

``event_timestamp`` of every row of a snapshot is the time its build started (UTC): the moment
from which the store offers these values. A training frame "as of T" therefore sees exactly the
snapshots built before T, whatever was rebuilt later. ``created`` is when the rows were written
(equal to ``event_timestamp`` except after a ``--force`` rebuild).

All inputs are opened and validated before anything is computed. A snapshot's files are staged
and committed together (:func:`pipelines.feature_tables.staged_snapshot`) only once the whole
input has been read and every file is written: a bad or truncated file, or any error while
writing, leaves no output, and an interrupted build resumes where it stopped when rerun (first
completing a snapshot whose commit had already begun).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import Timeout

from pipelines import feature_tables as ft
from pipelines.bandpower import BandpowerParams, WelchPlan, window_quality
from pipelines.errors import FeatureTableError, InputDataError
from pipelines.hdf5_io import H5Layout, H5Windows, open_windows
from pipelines.participants import LABEL_COLUMNS, read_participants
from services.files import sha256_file

log = logging.getLogger(__name__)

#: Bump when the meaning of any feature changes: every input then gets a new snapshot.
FEATURE_CODE_VERSION = "1"
DEFAULT_MAX_FLAT_FRACTION = 0.1
#: Read size when hashing inputs (large reads: the hash runs beside the computation).
HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class BuildOptions:
    """Options of :func:`build_features` (all have defaults).

    Parameters
    ----------
    params : BandpowerParams
        Bands and Welch parameters.
    max_flat_fraction : float
        A window is good when finite and at most this fraction of its non-reference channels is
        flat.
    chunk_windows : int
        Windows read and computed at a time.
    workers : int or None
        Threads that read and inflate HDF5 chunks ahead of the computation; ``None`` = CPU
        count + 1 (at most 8). The computation itself runs BLAS single-threaded (with the
        optional ``threadpoolctl``): the reader threads already keep every core busy, and
        OpenBLAS's own threads would only spin against them.
    force : bool
        Recompute inputs whose snapshot already exists.
    progress : bool
        Show a tqdm progress bar over windows.
    layout : H5Layout or None
        Dataset names for every input; ``None`` detects each file's layout.
    sfreq : float or None
        Sampling rate for files without an ``sfreq`` attribute.
    """

    params: BandpowerParams = field(default_factory=BandpowerParams)
    max_flat_fraction: float = DEFAULT_MAX_FLAT_FRACTION
    chunk_windows: int = 256
    workers: int | None = None
    force: bool = False
    progress: bool = True
    layout: H5Layout | None = None
    sfreq: float | None = None


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


@dataclass
class BuildReport:
    """Result of :func:`build_features`."""

    features_dir: Path
    files: list[FileResult]
    participants: FileResult

    @property
    def computed(self) -> list[FileResult]:
        return [f for f in self.files if f.status != "skipped"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    def summary(self) -> str:
        """Human-readable summary: windows, subjects, skipped files, flagged windows."""
        c = self.computed
        n_win = sum(f.n_windows for f in c)
        lines = [
            f"features: {self.features_dir}",
            f"  inputs: {len(self.files)} ({len(c)} computed, {len(self.skipped)} skipped: unchanged)",
            f"  windows computed: {n_win}, subjects: {sum(f.n_subjects for f in c)}",
            f"  flagged windows: {sum(n_win and f.n_windows - f.n_good_windows for f in c)} "
            f"({sum(f.n_nonfinite_windows for f in c)} non-finite, "
            f"{sum(f.n_flat_windows for f in c)} with flat channels)",
            f"  participants: {self.participants.snapshot_id} ({self.participants.status})",
        ]
        for f in self.files:
            lines.append(f"  {f.status:8s} {f.snapshot_id}  {f.path}")
        return "\n".join(lines)


def build_features(
    features_dir: str | Path,
    inputs: Sequence[str | Path],
    participants: str | Path,
    options: BuildOptions | None = None,
) -> BuildReport:
    """Compute band-power features of ``inputs`` into snapshots under ``features_dir``.

    Parameters
    ----------
    features_dir : path
        The offline store (``settings.features_dir``).
    inputs : sequence of paths
        HDF5 window files (either EEG2025 layout).
    participants : path
        BIDS participants.tsv listing every subject of the inputs.
    options : BuildOptions, optional

    Returns
    -------
    BuildReport

    Raises
    ------
    InputDataError
        A bad input (before anything is written for it).
    FeatureTableError
        The features directory is unusable or locked by another build.
    """
    opts = options or BuildOptions()
    features_dir = Path(features_dir)
    paths = list(dict.fromkeys(Path(p).resolve() for p in inputs))
    if not paths:
        raise InputDataError("no input files given; pass --input FILE.h5 [FILE.h5 ...]")
    try:
        features_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeatureTableError(
            f"cannot create the features directory {features_dir}: {exc}"
        ) from exc
    lock = ft.build_lock(features_dir, timeout=30)
    try:
        lock.acquire()
    except Timeout as exc:
        raise FeatureTableError(
            f"{features_dir}: another `eegfs features build` holds {ft.LOCK_NAME}; wait for it to finish"
        ) from exc
    try:
        ft.remove_stale_temporaries(features_dir)
        manifest = ft.Manifest.load(features_dir)
        finished = ft.finish_staged(manifest)
        if finished:
            log.info(
                "completed the commit of %d interrupted snapshot(s): %s", len(finished), finished
            )
        people = read_participants(participants)
        known = set(people["subject_id"])
        opened: list[H5Windows] = []
        try:
            for p in paths:
                opened.append(open_windows(p, layout=opts.layout, sfreq=opts.sfreq))
            _check_inputs(opened, known, manifest, Path(participants))
            part = _build_participants(features_dir, manifest, Path(participants), people, opts)
            with _single_threaded_blas():
                results = _build_files(features_dir, manifest, opened, opts)
        finally:
            for w in opened:
                w.close()
        return BuildReport(features_dir=features_dir, files=results, participants=part)
    finally:
        lock.release()


def _single_threaded_blas():
    """Limit BLAS to one thread while building (no-op without the optional threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _default_workers() -> int:
    return min(8, (os.cpu_count() or 2) + 1)


def _check_inputs(
    opened: list[H5Windows], known: set[str], manifest: ft.Manifest, participants: Path
) -> None:
    channels = dict(manifest.channels)
    for w in opened:
        unknown = sorted(set(w.subject_ids) - known)
        if unknown:
            raise InputDataError(
                f"{w.path}: dataset {w.layout.subjects!r} holds {len(unknown)} subject(s) missing "
                f"from {participants}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}. Fix: pass "
                "the participants.tsv that lists them (ids may carry 'sub-' or not)"
            )
        key = ft.challenge_dir(w.layout.challenge)
        if key in channels and channels[key] != w.channel_names:
            diff = [
                (i, a, b)
                for i, (a, b) in enumerate(zip(channels[key], w.channel_names, strict=False))
                if a != b
            ][:3]
            raise InputDataError(
                f"{w.path}: channel order differs from the {key} features already in the store "
                f"({len(w.channel_names)} vs {len(channels[key])} channels; first differences "
                f"(index, store, file): {diff}). Files with different channel orders are never "
                "mixed: re-export with the same order, or use another EEGFS_DATA_DIR"
            )
        channels[key] = list(w.channel_names)


def _participants_snapshot_id(sha256: str) -> str:
    return "participants_" + ft.short_hash({"sha256": sha256, "code": FEATURE_CODE_VERSION})


def _build_participants(
    features_dir: Path,
    manifest: ft.Manifest,
    path: Path,
    people: pd.DataFrame,
    opts: BuildOptions,
) -> FileResult:
    sha = sha256_file(path, chunk=HASH_CHUNK)
    sid = _participants_snapshot_id(sha)
    old = manifest.snapshots.get(sid)
    if old is not None and not opts.force:
        return FileResult(path, sid, "skipped", n_subjects=len(people))
    created = datetime.now(UTC)
    event_ts = datetime.fromisoformat(old["event_timestamp"]) if old else created
    n = len(people)
    common = {
        "subject_id": pa.array(people["subject_id"], pa.string()),
        "release": pa.array(people["release"].astype(str), pa.string()),
        "snapshot_id": pa.array([sid] * n, pa.string()),
        "event_timestamp": ft.timestamp_array(event_ts, n),
        "created": ft.timestamp_array(created, n),
    }
    demo = pa.table(
        {
            **common,
            "age": pa.array(people["age"], pa.float64()),
            "sex": pa.array(people["sex"], pa.string()),
            "ehq_total": pa.array(people["ehq_total"], pa.float64()),
        }
    )
    labels = pa.table({**common, **{c: pa.array(people[c], pa.float64()) for c in LABEL_COLUMNS}})
    with ft.staged_snapshot(features_dir, sid) as stage:
        stage.write_table(ft.SUBJECT_DEMOGRAPHICS, demo)
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
                "event_timestamp": event_ts.isoformat(),
                "n_subjects": n,
            },
        )
    return FileResult(path, sid, "rebuilt" if old else "built", n_subjects=n)


def _cached_sha256(manifest: ft.Manifest, path: Path) -> str | None:
    """The manifest's SHA-256 of ``path`` when its size and mtime are unchanged, else None."""
    st = path.stat()
    cached = manifest.hash_cache.get(str(path))
    if cached and cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
        return cached["sha256"]
    return None


def _hash_file(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return sha256_file(path, chunk=HASH_CHUNK), st.st_size, st.st_mtime_ns


def _snapshot_id(w: H5Windows, sha: str, opts: BuildOptions) -> str:
    identity = {
        "sha256": sha,
        "code": FEATURE_CODE_VERSION,
        "params": opts.params.to_dict(),
        "max_flat_fraction": opts.max_flat_fraction,
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


def _build_files(
    features_dir: Path, manifest: ft.Manifest, opened: list[H5Windows], opts: BuildOptions
) -> list[FileResult]:
    """Skip unchanged inputs, compute the others.

    An input whose hash is not cached is hashed in a background thread while its features are
    already being computed (hashlib releases the GIL); its window rows are held back until the
    snapshot id is known, and the work is dropped if that snapshot turns out to exist.
    """
    from tqdm.auto import tqdm

    todo: list[tuple[H5Windows, Future]] = []
    results: dict[Path, FileResult] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
        for w in opened:
            sha = None if opts.force else _cached_sha256(manifest, w.path)
            if sha is None:
                todo.append((w, hasher.submit(_hash_file, w.path)))
                continue
            sid = _snapshot_id(w, sha, opts)
            old = manifest.snapshots.get(sid)
            if old is not None:
                results[w.path] = _skipped(w, sid, old)
            else:
                done: Future = Future()
                st = w.path.stat()
                done.set_result((sha, st.st_size, st.st_mtime_ns))
                todo.append((w, done))
        total = sum(w.n_windows for w, _ in todo)
        with tqdm(total=total, unit="win", desc="features", disable=not opts.progress) as bar:
            for w, sha_future in todo:
                bar.set_postfix_str(w.path.name)
                results[w.path] = _build_one(features_dir, manifest, w, sha_future, opts, bar)
    manifest.save()  # keeps the hash cache even when everything was skipped
    return [results[w.path] for w in opened]


def _skipped(w: H5Windows, sid: str, old: dict) -> FileResult:
    return FileResult(
        w.path,
        sid,
        "skipped",
        w.layout.challenge,
        old.get("n_windows", 0),
        old.get("n_subjects", 0),
        old.get("n_good_windows", 0),
    )


@dataclass
class _SubjectAccumulator:
    """Running sums over each subject's good windows (float64)."""

    n_subjects: int
    n_channels: int
    n_bands: int

    def __post_init__(self) -> None:
        shape = (self.n_subjects, self.n_channels, self.n_bands)
        self.sum_log = np.zeros(shape)
        self.cnt_log = np.zeros(shape, np.int64)
        self.sum_rel = np.zeros(shape)
        self.cnt_rel = np.zeros(shape, np.int64)
        self.sum_ent = np.zeros(self.n_subjects)
        self.cnt_ent = np.zeros(self.n_subjects, np.int64)
        self.n_windows = np.zeros(self.n_subjects, np.int64)
        self.n_good = np.zeros(self.n_subjects, np.int64)

    def add(self, codes: np.ndarray, good: np.ndarray, log_abs, rel, ent) -> None:
        np.add.at(self.n_windows, codes, 1)
        np.add.at(self.n_good, codes[good], 1)
        for s in np.unique(codes[good]):
            m = good & (codes == s)
            for arr, sums, cnts in (
                (log_abs, self.sum_log, self.cnt_log),
                (rel, self.sum_rel, self.cnt_rel),
            ):
                block = arr[m]
                ok = np.isfinite(block)
                sums[s] += np.where(ok, block, 0.0).sum(axis=0)
                cnts[s] += ok.sum(axis=0)
            e = ent[m]
            ok = np.isfinite(e)
            self.sum_ent[s] += e[ok].sum(dtype=np.float64)
            self.cnt_ent[s] += int(ok.sum())


def _build_one(
    features_dir: Path,
    manifest: ft.Manifest,
    w: H5Windows,
    sha_future: Future,
    opts: BuildOptions,
    bar,
) -> FileResult:
    t0 = time.perf_counter()
    params = opts.params
    bands = params.band_names
    plan = WelchPlan(params, w.sfreq, w.n_times)
    ref = w.reference_mask
    created = datetime.now(UTC)
    challenge = w.layout.challenge
    codes, subjects = pd.factorize(pd.Series(w.subject_ids), sort=False)
    codes = codes.astype(np.int64)
    acc = _SubjectAccumulator(len(subjects), w.n_channels, len(bands))
    chan_mean_rel = np.full((w.n_windows, len(bands)), np.nan, np.float32)
    good_all = np.zeros(w.n_windows, bool)
    n_nonfinite = n_flat_windows = 0
    ident: dict = {}  # sid, old, sha, event_ts once the hash is known
    pending: list[tuple] = []

    def resolve() -> bool:
        """Learn the snapshot id; True when that snapshot exists (and no --force)."""
        sha, size, mtime_ns = sha_future.result()
        manifest.hash_cache[str(w.path)] = {"size": size, "mtime_ns": mtime_ns, "sha256": sha}
        sid = _snapshot_id(w, sha, opts)
        old = manifest.snapshots.get(sid)
        event_ts = datetime.fromisoformat(old["event_timestamp"]) if old else created
        ident.update(sid=sid, old=old, sha=sha, event_ts=event_ts)
        return old is not None and not opts.force

    with contextlib.ExitStack() as stack:
        writer = None
        chunks = w.iter_chunks(opts.chunk_windows, workers=opts.workers or _default_workers())
        stack.callback(chunks.close)
        while True:
            item = next(chunks, None)
            if item is not None:
                start, x = item
                stop = start + x.shape[0]
                r = plan.compute(x, to_uv=w.to_uv, overwrite=True)
                n_flat, good = window_quality(r, ref, max_flat_fraction=opts.max_flat_fraction)
                n_nonfinite += int(r.nonfinite.sum())
                n_flat_windows += int((n_flat > 0).sum())
                good_all[start:stop] = good
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
                    chan_mean_rel[start:stop] = np.nanmean(r.rel_power, axis=1)
                    ent_mean = np.nanmean(r.spectral_entropy, axis=1).astype(np.float32)
                acc.add(codes[start:stop], good, r.log_abs_power, r.rel_power, r.spectral_entropy)
                pending.append((start, stop, r, ent_mean, good, n_flat))
                bar.update(stop - start)
            if writer is None and (sha_future.done() or item is None):
                if resolve():
                    bar.update(w.n_windows - (pending[-1][1] if pending else 0))
                    return _skipped(w, ident["sid"], ident["old"])
                sid = ident["sid"]
                schema_meta = {
                    b"eegfs.channel_names": _json(w.channel_names),
                    b"eegfs.bands": _json(params.to_dict()["bands"]),
                    b"eegfs.params": _json(params.to_dict()),
                    b"eegfs.snapshot_id": sid.encode(),
                    b"eegfs.source": str(w.path.name).encode(),
                    b"eegfs.code_version": FEATURE_CODE_VERSION.encode(),
                    b"eegfs.units": b"abs_*: uV^2; logabs_*: log10(uV^2); rel_*: fraction of total power",
                }
                win_schema = _window_schema(bands).with_metadata(schema_meta)
                # every file of the snapshot is staged; all appear together at the commit below
                stage = stack.enter_context(ft.staged_snapshot(features_dir, sid))
                # dictionary encoding only for the repeated strings: trying it on float lists costs 4x
                writer = stack.enter_context(
                    pq.ParquetWriter(
                        stage.path(ft.WINDOW_FEATURES, challenge),
                        win_schema,
                        compression="snappy",
                        use_dictionary=["subject_id", "release", "snapshot_id"],
                        write_statistics=False,
                    )
                )
            if writer is not None:
                for p_start, p_stop, p_r, p_ent, p_good, p_flat in pending:
                    writer.write_batch(
                        _window_batch(
                            w,
                            sid,
                            p_start,
                            p_stop,
                            ident["event_ts"],
                            created,
                            bands,
                            p_r,
                            p_ent,
                            p_good,
                            p_flat,
                            win_schema,
                        )
                    )
                pending.clear()
            if item is None:
                break
        writer.close()
        old, sha, event_ts = ident["old"], ident["sha"], ident["event_ts"]
        stage.write_table(
            ft.WINDOW_LABELS, _window_labels_table(w, sid, event_ts, created), challenge
        )
        if "response_time" in w.labels:
            rt = _rt_table(w, codes, subjects, sid, event_ts, created)
            stage.write_table(ft.SUBJECT_RT_LABELS, rt, challenge)
        subj = _subject_table(
            w, acc, subjects, chan_mean_rel, good_all, codes, sid, event_ts, created, bands
        )
        subj = subj.replace_schema_metadata({**schema_meta, **(subj.schema.metadata or {})})
        stage.write_table(ft.SUBJECT_FEATURES, subj, challenge)
        n_good = int(good_all.sum())
        stage.commit(
            manifest,
            {
                "kind": "hdf5",
                "challenge": challenge,
                "layout": w.layout.name,
                "input": {
                    "path": str(w.path),
                    "name": w.path.name,
                    "sha256": sha,
                    "size": w.path.stat().st_size,
                },
                "code_version": FEATURE_CODE_VERSION,
                "params": {**params.to_dict(), "max_flat_fraction": opts.max_flat_fraction},
                "created": created.isoformat(),
                "event_timestamp": event_ts.isoformat(),
                "release": w.release,
                "sfreq": w.sfreq,
                "n_times": w.n_times,
                "channels": list(w.channel_names),
                "n_windows": w.n_windows,
                "n_subjects": len(subjects),
                "n_good_windows": n_good,
                "n_nonfinite_windows": n_nonfinite,
                "n_flat_windows": n_flat_windows,
            },
        )
    return FileResult(
        path=w.path,
        snapshot_id=sid,
        status="rebuilt" if old else "built",
        challenge=challenge,
        n_windows=w.n_windows,
        n_subjects=len(subjects),
        n_good_windows=n_good,
        n_nonfinite_windows=n_nonfinite,
        n_flat_windows=n_flat_windows,
        seconds=time.perf_counter() - t0,
    )


def _json(obj) -> bytes:
    import json

    return json.dumps(obj).encode()


def _window_schema(bands: list[str]) -> pa.Schema:
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


def _window_batch(w, sid, start, stop, event_ts, created, bands, r, ent_mean, good, n_flat, schema):
    n = stop - start
    cols = {
        "subject_id": pa.array(w.subject_ids[start:stop], pa.string()),
        "release": pa.array([w.release] * n, pa.string()),
        "challenge": pa.array(np.full(n, w.layout.challenge, np.int8)),
        "window_index": pa.array(np.arange(start, stop, dtype=np.int64)),
        "event_timestamp": ft.timestamp_array(event_ts, n),
        "created": ft.timestamp_array(created, n),
        "snapshot_id": pa.array([sid] * n, pa.string()),
    }
    for prefix, arr in (("abs", r.abs_power), ("rel", r.rel_power), ("logabs", r.log_abs_power)):
        for j, b in enumerate(bands):
            cols[f"{prefix}_{b}"] = ft.list_array(arr[:, :, j])
    cols["spectral_entropy"] = ft.list_array(r.spectral_entropy)
    cols["spectral_entropy_mean"] = pa.array(ent_mean, pa.float32())
    cols["good"] = pa.array(good)
    cols["nonfinite"] = pa.array(r.nonfinite)
    cols["n_flat_channels"] = pa.array(n_flat.astype(np.int16))
    return pa.record_batch([cols[f.name] for f in schema], schema=schema)


def _common_columns(ids, release, challenge, sid, event_ts, created) -> dict:
    n = len(ids)
    return {
        "subject_id": pa.array(list(ids), pa.string()),
        "release": pa.array(
            [release] * n if isinstance(release, str) else list(release), pa.string()
        ),
        "challenge": pa.array(np.full(n, challenge, np.int8)),
        "snapshot_id": pa.array([sid] * n, pa.string()),
        "event_timestamp": ft.timestamp_array(event_ts, n),
        "created": ft.timestamp_array(created, n),
    }


def _window_labels_table(w: H5Windows, sid, event_ts, created) -> pa.Table:
    cols = _common_columns(w.subject_ids, w.release, w.layout.challenge, sid, event_ts, created)
    cols["window_index"] = pa.array(np.arange(w.n_windows, dtype=np.int64))
    for name in sorted(w.labels):
        cols[name] = pa.array(w.labels[name], pa.float64())
    return pa.table(cols)


def _rt_table(w: H5Windows, codes, subjects, sid, event_ts, created) -> pa.Table:
    rt = w.labels["response_time"]
    stats = np.full((len(subjects), 3), np.nan)
    n_rt = np.zeros(len(subjects), np.int64)
    for s in range(len(subjects)):
        v = rt[(codes == s) & np.isfinite(rt)]
        n_rt[s] = v.size
        if v.size:
            stats[s] = (v.mean(), np.median(v), v.std())
    cols = _common_columns(subjects, w.release, w.layout.challenge, sid, event_ts, created)
    cols.update(
        rt_mean=pa.array(stats[:, 0]),
        rt_median=pa.array(stats[:, 1]),
        rt_std=pa.array(stats[:, 2]),
        n_rt_windows=pa.array(n_rt),
    )
    return pa.table(cols)


def _subject_table(
    w,
    acc: _SubjectAccumulator,
    subjects,
    chan_mean_rel,
    good_all,
    codes,
    sid,
    event_ts,
    created,
    bands,
) -> pa.Table:
    cols = _common_columns(subjects, w.release, w.layout.challenge, sid, event_ts, created)
    cols["source_file"] = pa.array([w.path.name] * len(subjects), pa.string())
    cols["n_windows"] = pa.array(acc.n_windows)
    cols["n_good_windows"] = pa.array(acc.n_good)
    cols["good_fraction"] = pa.array((acc.n_good / np.maximum(acc.n_windows, 1)).astype(np.float32))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # subjects without good windows: NaN
        chan_log = acc.sum_log / acc.cnt_log  # (S, C, B)
        chan_rel = acc.sum_rel / acc.cnt_rel
        log_mean = np.nanmean(chan_log, axis=1)
        log_std = np.nanstd(chan_log, axis=1)
        rel_mean = np.nanmean(chan_rel, axis=1)
        rel_median = np.full((len(subjects), len(bands)), np.nan)
        for s in range(len(subjects)):
            m = good_all & (codes == s)
            if m.any():
                rel_median[s] = np.nanmedian(chan_mean_rel[m], axis=0)
        ent = acc.sum_ent / acc.cnt_ent
    for j, b in enumerate(bands):
        cols[f"logabs_mean_{b}"] = pa.array(log_mean[:, j].astype(np.float32))
        cols[f"logabs_std_{b}"] = pa.array(log_std[:, j].astype(np.float32))
        cols[f"rel_mean_{b}"] = pa.array(rel_mean[:, j].astype(np.float32))
        cols[f"rel_median_{b}"] = pa.array(rel_median[:, j].astype(np.float32))
    cols["spectral_entropy_mean"] = pa.array(ent.astype(np.float32))
    for j, b in enumerate(bands):
        cols[f"chan_rel_{b}"] = ft.list_array(chan_rel[:, :, j].astype(np.float32))
    return pa.table(cols)


__all__ = [
    "FEATURE_CODE_VERSION",
    "BuildOptions",
    "BuildReport",
    "FileResult",
    "build_features",
]
