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

Before a snapshot's per-subject rows are served they pass the data-quality gates
(:mod:`pipelines.quality`); rows that fail are held back (:mod:`pipelines.promotion`) and
evaluated again by every later build of the same input. Each build ends by writing its report
(:mod:`pipelines.quality_report`, shown by ``eegfs features quality``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from filelock import Timeout
from threadpoolctl import threadpool_limits

from pipelines import feature_tables as ft
from pipelines import promotion
from pipelines import quality_report as qr
from pipelines.bandpower import BandpowerParams
from pipelines.build_snapshot import (
    FileResult,
    build_participants_snapshot,
    build_window_snapshot,
    cached_sha256,
    hash_file,
    skipped_result,
    window_snapshot_id,
)
from pipelines.errors import FeatureTableError, InputDataError
from pipelines.hdf5_io import H5Windows, open_windows
from pipelines.hdf5_layout import H5Layout
from pipelines.participants import RowProblem, load_participants
from pipelines.quality import QualityThresholds

log = logging.getLogger(__name__)

DEFAULT_MAX_FLAT_FRACTION = 0.1


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
        count + 1 (at most 8). The computation itself runs BLAS single-threaded (with
        ``threadpoolctl``): the reader threads already keep every core busy, and OpenBLAS's
        own threads would only spin against them.
    force : bool
        Recompute inputs whose snapshot already exists.
    progress : bool
        Show a tqdm progress bar over windows.
    layout : H5Layout or None
        Dataset names for every input; ``None`` detects each file's layout.
    sfreq : float or None
        Sampling rate for files without an ``sfreq`` attribute.
    direct_chunks : bool
        Decode gzip chunks in the reader threads where the storage allows it
        (:mod:`pipelines.hdf5_chunks`); False reads every file through h5py (same values; the
        baseline of ``benchmarks/bench_features.py``).
    thresholds : QualityThresholds
        Thresholds of the data-quality gates (:mod:`pipelines.quality`).
    accept_failing : bool
        Promote rows that fail a gate anyway (except a channel-count change); the manifest
        records that they were accepted.
    lenient_participants : bool
        Skip bad participants.tsv lines (listed in the report) instead of failing.
    """

    params: BandpowerParams = field(default_factory=BandpowerParams)
    max_flat_fraction: float = DEFAULT_MAX_FLAT_FRACTION
    chunk_windows: int = 256
    workers: int | None = None
    force: bool = False
    progress: bool = True
    layout: H5Layout | None = None
    sfreq: float | None = None
    direct_chunks: bool = True
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    accept_failing: bool = False
    lenient_participants: bool = False


@dataclass
class BuildReport:
    """Result of :func:`build_features`."""

    features_dir: Path
    files: list[FileResult]
    participants: FileResult | None  # None: built without a participants.tsv (build_input)
    participants_skipped: list[RowProblem] = field(default_factory=list)
    accept_failing: bool = False
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: subjects no participants.tsv of the store lists (only without a participants.tsv)
    unlisted_subjects: list[str] = field(default_factory=list)

    @property
    def computed(self) -> list[FileResult]:
        return [f for f in self.files if f.status != "skipped"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def quality(self) -> list[promotion.QualityOutcome]:
        """The gates' outcome for every input that had one in this build."""
        return [f.quality for f in self.files if f.quality is not None]

    @property
    def n_held_back(self) -> int:
        """Subjects whose rows the gates held back (not served) after this build."""
        return sum(len(o.held_back) for o in self.quality)

    def to_report(self) -> dict:
        """The build report (what ``eegfs features quality`` shows; see quality_report)."""
        return qr.build_report_document(
            features_dir=self.features_dir,
            finished_at=self.finished_at,
            accept_failing=self.accept_failing,
            thresholds=self.thresholds,
            inputs=[qr.input_record(f) for f in self.files],
            participants=None if self.participants is None else qr.input_record(self.participants),
            participants_skipped=self.participants_skipped,
        )

    def summary(self) -> str:
        """Human-readable summary: windows, subjects, skipped files, flagged windows, gates."""
        c = self.computed
        n_win = sum(f.n_windows for f in c)
        lines = [
            f"features: {self.features_dir}",
            f"  inputs: {len(self.files)} ({len(c)} computed, {len(self.skipped)} skipped: unchanged)",
            f"  windows computed: {n_win}, subjects: {sum(f.n_subjects for f in c)}",
            f"  flagged windows: {sum(n_win and f.n_windows - f.n_good_windows for f in c)} "
            f"({sum(f.n_nonfinite_windows for f in c)} non-finite, "
            f"{sum(f.n_flat_windows for f in c)} with flat channels)",
        ]
        if self.participants is not None:
            p = self.participants
            lines.append(f"  participants: {p.snapshot_id} ({p.status})")
        if self.unlisted_subjects:
            lines.append(
                f"  warning: {len(self.unlisted_subjects)} subject(s) in no participants.tsv of "
                f"the store (no demographics or labels): {self.unlisted_subjects[:5]}"
            )
        if self.participants_skipped:
            lines.append(
                f"  participants.tsv rows skipped (--lenient): {len(self.participants_skipped)}"
            )
        accepted = sum(len(o.accepted) for o in self.quality)
        lines.append(
            f"  quality gates: {self.n_held_back} subject(s) held back, {accepted} accepted "
            "despite failing (eegfs features quality shows the report)"
        )
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
    return _build(features_dir, inputs, participants, options or BuildOptions(), report=True)


def build_input(
    features_dir: str | Path,
    path: str | Path,
    participants: str | Path | None = None,
    options: BuildOptions | None = None,
) -> BuildReport:
    """The snapshots of one input, exactly as :func:`build_features` would commit them.

    The same snapshot ids, gates, participants parsing and re-evaluation of rows held back; the
    report of the last ``build`` (``quality_report.json``) is left as it is. For
    ``eegfs features push`` (:mod:`featurestore.push`).

    Parameters
    ----------
    features_dir, options
        As for :func:`build_features`.
    path : path
        One HDF5 window file.
    participants : path or None
        A participants.tsv listing every subject of ``path`` (its snapshot is built as by
        ``build``). None: no participants snapshot; subjects that no participants.tsv of the
        store lists are allowed and listed in :attr:`BuildReport.unlisted_subjects` (they get no
        demographics and no questionnaire labels).
    """
    return _build(features_dir, [path], participants, options or BuildOptions(), report=False)


def _build(
    features_dir: str | Path,
    inputs: Sequence[str | Path],
    participants: str | Path | None,
    opts: BuildOptions,
    *,
    report: bool,
) -> BuildReport:
    features_dir = Path(features_dir)
    paths = list(dict.fromkeys(Path(p).resolve() for p in inputs))
    if not paths:
        raise InputDataError("no input files given; pass --input FILE.h5 [FILE.h5 ...]")
    with _locked_store(features_dir) as manifest:
        people = (
            None
            if participants is None
            else load_participants(participants, lenient=opts.lenient_participants)
        )
        with contextlib.ExitStack() as stack:
            opened = []
            for p in paths:
                opened.append(open_windows(p, layout=opts.layout, sfreq=opts.sfreq))
                stack.callback(opened[-1].close)
            if people is None:
                unlisted = _check_unlisted(opened, manifest)
            else:
                unlisted = []
                _check_subjects(opened, set(people.frame["subject_id"]), Path(participants))
            _check_channels(opened, manifest)
            part = None
            if people is not None:
                part = build_participants_snapshot(
                    features_dir, manifest, Path(participants), people.frame, opts.force
                )
            # one BLAS thread: the reader threads already keep every core busy
            with threadpool_limits(limits=1, user_api="blas"):
                results = _build_files(features_dir, manifest, opened, opts)
        _reevaluate_held_back(features_dir, manifest, results, opts)
        out = BuildReport(
            features_dir=features_dir,
            files=results,
            participants=part,
            participants_skipped=[] if people is None else people.skipped,
            accept_failing=opts.accept_failing,
            thresholds=opts.thresholds,
            unlisted_subjects=unlisted,
        )
        if report:
            qr.write_report(features_dir, out.to_report())
    return out


@contextlib.contextmanager
def _locked_store(features_dir: Path) -> Iterator[ft.Manifest]:
    """The store's manifest, with the build lock held and interrupted commits completed."""
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
        yield manifest
    finally:
        lock.release()


def _check_subjects(opened: list[H5Windows], known: set[str], participants: Path) -> None:
    for w in opened:
        unknown = sorted(set(w.subject_ids) - known)
        if unknown:
            raise InputDataError(
                f"{w.path}: dataset {w.layout.subjects!r} holds {len(unknown)} subject(s) missing "
                f"from {participants}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}. Fix: pass "
                "the participants.tsv that lists them (ids may carry 'sub-' or not)"
            )


def _check_unlisted(opened: list[H5Windows], manifest: ft.Manifest) -> list[str]:
    """Subjects of ``opened`` that no participants snapshot of the store lists."""
    listed = ft.read_tables(manifest.files(ft.SUBJECT_DEMOGRAPHICS), columns=["subject_id"])
    known = set() if listed is None else set(listed["subject_id"].to_pylist())
    return sorted({s for w in opened for s in w.subject_ids} - known)


def _check_channels(opened: list[H5Windows], manifest: ft.Manifest) -> None:
    channels = dict(manifest.channels)
    for w in opened:
        key = ft.challenge_dir(w.layout.challenge)
        if key in channels and len(channels[key]) != len(w.channel_names):
            continue  # another channel count: the channel_count gate holds the file's rows back
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
            sha = None if opts.force else cached_sha256(manifest, w.path)
            if sha is None:
                todo.append((w, hasher.submit(hash_file, w.path)))
                continue
            sid = window_snapshot_id(w, sha, opts.params, opts.max_flat_fraction)
            old = manifest.snapshots.get(sid)
            if old is not None:
                results[w.path] = skipped_result(w, sid, old)
            else:
                done: Future = Future()
                st = w.path.stat()
                done.set_result((sha, st.st_size, st.st_mtime_ns))
                todo.append((w, done))
        total = sum(w.n_windows for w, _ in todo)
        with tqdm(total=total, unit="win", desc="features", disable=not opts.progress) as bar:
            for w, sha_future in todo:
                bar.set_postfix_str(w.path.name)
                results[w.path] = build_window_snapshot(
                    features_dir, manifest, w, sha_future, opts, bar
                )
    manifest.save()  # keeps the hash cache even when everything was skipped
    return [results[w.path] for w in opened]


def _reevaluate_held_back(
    features_dir: Path, manifest: ft.Manifest, results: list[FileResult], opts: BuildOptions
) -> None:
    """Evaluate again the rows that existing snapshots of these inputs hold back.

    A snapshot computed by this build was just decided; a skipped (or ``--force`` rebuilt) one
    may hold rows back from an earlier build: they are promoted now if they pass the gates (or
    ``accept_failing``), by a new snapshot (see :func:`pipelines.promotion.reevaluate`).
    """
    now = datetime.now(UTC)
    for result in results:
        if result.status == "built":
            continue
        outcome = promotion.reevaluate(
            features_dir, manifest, result.snapshot_id, opts.thresholds, opts.accept_failing, now
        )
        if outcome is not None:
            result.quality = outcome


__all__ = [
    "BuildOptions",
    "BuildReport",
    "build_features",
    "build_input",
]
