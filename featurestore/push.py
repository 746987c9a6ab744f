"""Push one new recording: its snapshots, as ``build`` commits them, and their rows online.

:func:`push_file` (``eegfs features push``) is a build of one input followed by an online write
limited to the snapshots that build committed::

    result = push_file(settings, "new_subject.h5", participants_path="participants.tsv")
    result.served_snapshot_id   # what the online store serves now (the marker)

1. **Offline**: :func:`pipelines.build.build_input` computes the file's window and subject
   tables with the kernel, gates and participants parsing of ``eegfs features build`` and
   commits them through the project's snapshot writer, under the snapshot id a build of that
   file gets. A later ``build`` of the same file finds that snapshot and adds nothing;
   historical retrieval as of a time before the push does not see the rows (their
   ``event_timestamp`` is the push's start), as of a later time it does.
2. **Online**: the rows of those snapshots that the online store does not serve yet (the file's,
   a promotion of rows it held back earlier, a new participants.tsv's) go to Redis through
   Feast's ``FeatureStore.push(..., to=PushMode.ONLINE)`` on each view's push source (the latest
   row per subject, as materialization writes); no other input is read or materialized. Then
   the materialization marker gets the pushed snapshot ids (:func:`featurestore.marker.add_to_marker`),
   which drops every client's online cache. Rows held back by a quality gate are not pushed.

Feast skips an online write whose event time is not newer than the one stored for that entity
and view (at one-second resolution in older Feast releases): a push waits, when needed, until
the wall clock is in a later second than every committed snapshot, so its rows are always newer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from featurestore.client import FeatureStoreClient
from featurestore.errors import FeatureStoreError
from featurestore.historical import table_files
from featurestore.marker import add_to_marker, parse_marker, read_marker_raw
from featurestore.repo import ENTITY_KEY, TABLE_TAG, require_registry
from pipelines import feature_tables as ft
from pipelines.build import BuildOptions, BuildReport, build_input
from pipelines.build_snapshot import FileResult
from services.connections import mask_uri
from services.settings import Settings


@dataclass
class PushResult:
    """What :func:`push_file` did.

    Attributes
    ----------
    path : Path
        The input file.
    build : BuildReport
        The offline part (one input; ``build.participants`` is None without a participants.tsv).
    snapshot_ids : list of str
        Snapshots whose rows this push wrote online (empty: they were online already).
    rows_online : dict
        Feature view -> rows written online.
    served_snapshot_id : str or None
        What the online store serves after the push (the marker's ``store_snapshot_id``).
    seconds : float
        Wall time of the push, from the call to the marker.
    """

    path: Path
    build: BuildReport
    snapshot_ids: list[str] = field(default_factory=list)
    rows_online: dict[str, int] = field(default_factory=dict)
    served_snapshot_id: str | None = None
    seconds: float = 0.0

    @property
    def file(self) -> FileResult:
        """The input's snapshot (``built``, or ``skipped`` when it existed already)."""
        return self.build.files[0]

    @property
    def held_back(self) -> list[str]:
        """Subjects of the file whose rows a quality gate holds back (not served)."""
        return [] if self.file.quality is None else self.file.quality.held_back

    def summary(self, redis_url: str | None = None) -> str:
        """Human-readable summary: the build's lines, then what went online."""
        lines = [self.build.summary()]
        if self.snapshot_ids:
            rows = ", ".join(f"{v}={n}" for v, n in sorted(self.rows_online.items()))
            lines.append(f"  pushed online: {len(self.snapshot_ids)} snapshot(s); rows: {rows}")
        else:
            lines.append("  pushed online: nothing new (its snapshots were online already)")
        where = f" (Redis {mask_uri(redis_url)})" if redis_url else ""
        lines.append(f"  online store serves {self.served_snapshot_id}{where}")
        lines.append(f"  push took {self.seconds:.2f} s")
        return "\n".join(lines)


def push_file(
    settings: Settings,
    h5_path: str | Path,
    *,
    participants_path: str | Path | None = None,
    options: BuildOptions | None = None,
    client: FeatureStoreClient | None = None,
) -> PushResult:
    """Build the snapshots of one HDF5 file and make their rows available online now.

    Parameters
    ----------
    settings : Settings
        The store (``features_dir``, ``redis_url``, ``feature_repo``); ``eegfs features apply``
        must have run.
    h5_path : path
        One HDF5 window file (either EEG2025 layout).
    participants_path : path, optional
        A participants.tsv listing every subject of the file; its snapshot is built (and pushed)
        as by ``build``. Without it, subjects that no participants.tsv of the store lists are
        pushed without demographics or labels (listed in ``result.build.unlisted_subjects``).
    options : BuildOptions, optional
        As for ``build`` (``progress`` defaults on; ``force`` is refused: a push never rewrites
        a snapshot).
    client : FeatureStoreClient, optional
        A client to reuse (its Feast store and Redis connection; its online cache is dropped).

    Returns
    -------
    PushResult

    Raises
    ------
    FeatureStoreError
        No registry (run ``eegfs features apply``), a view without a push source (apply again),
        or Redis failing. The offline snapshots stay committed; the next push or materialize
        puts their rows online.
    InputDataError, FeatureTableError
        A bad input, participants.tsv or store, as for ``build`` (nothing is written).
    """
    t0 = time.perf_counter()
    opts = options or BuildOptions()
    if opts.force:
        raise FeatureStoreError(
            "push never rewrites a snapshot; use `eegfs features build --force`"
        )
    require_registry(settings)
    own = client is None
    client = client or FeatureStoreClient(settings, cache_size=0)
    try:
        store = client.store
        store.refresh_registry()
        sources = _push_sources(store)
        wait_past_latest_snapshot(settings.features_dir)
        report = build_input(settings.features_dir, h5_path, participants_path, opts)
        manifest = ft.Manifest.load(settings.features_dir)
        raw = read_marker_raw(client.redis, client.project, settings.redis_url)
        online = set((parse_marker(raw) or {}).get("snapshot_ids", []))
        sids = [s for s in _snapshots_of(report) if s not in online]
        rows = _push_rows(store, manifest, sids, sources, settings.redis_url)
        if sids:
            add_to_marker(client.redis, client.project, settings.redis_url, sids)
        client.online.sync_marker()
        served = client.served_snapshot_id()
    finally:
        if own:
            client.close()
    return PushResult(Path(h5_path).resolve(), report, sids, rows, served, time.perf_counter() - t0)


def wait_past_latest_snapshot(features_dir: Path) -> float:
    """Sleep until the wall clock is in a later second than every committed snapshot's
    ``event_timestamp``; returns the seconds slept (0 almost always)."""
    latest = _latest_event_timestamp(ft.Manifest.load(features_dir))
    if latest is None:
        return 0.0
    next_second = latest.replace(microsecond=0).timestamp() + 1.0
    delay = next_second - datetime.now(UTC).timestamp()
    if delay > 0:
        time.sleep(delay)
    return max(delay, 0.0)


def _latest_event_timestamp(manifest: ft.Manifest) -> datetime | None:
    stamps = [datetime.fromisoformat(s["event_timestamp"]) for s in manifest.snapshots.values()]
    return max(stamps) if stamps else None


def _push_sources(store) -> dict[str, tuple[str, str]]:
    """View name -> (table under features_dir, push source name), for every tagged view."""
    from feast.data_source import PushSource

    out = {}
    for view in store.list_feature_views():
        table = (view.batch_source.tags or {}).get(TABLE_TAG)
        if not table:
            continue
        if not isinstance(view.stream_source, PushSource):
            raise FeatureStoreError(
                f"feature view {view.name!r} has no push source in the registry (applied before "
                "push existed?); run `eegfs features apply`, then push again"
            )
        out[view.name] = (table, view.stream_source.name)
    return out


def _snapshots_of(report: BuildReport) -> list[str]:
    """The snapshots that hold this push's rows: the file's, a promotion of rows it held back
    earlier, the participants.tsv's."""
    out = []
    for f in report.files:
        out.append(f.snapshot_id)
        if f.quality is not None and f.quality.promotion_snapshot_id:
            out.append(f.quality.promotion_snapshot_id)
    if report.participants is not None:
        out.append(report.participants.snapshot_id)
    return list(dict.fromkeys(out))


def _latest_per_subject(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per subject: its latest (``event_timestamp``, ``created``), as materialize takes."""
    ordered = frame.sort_values(["event_timestamp", "created"], kind="stable")
    return ordered.drop_duplicates(ENTITY_KEY, keep="last").reset_index(drop=True)


def _push_rows(
    store, manifest: ft.Manifest, sids: list[str], sources: dict, redis_url: str
) -> dict[str, int]:
    """Push the served rows of snapshots ``sids`` to every view they feed; rows per view."""
    from feast.data_source import PushMode

    from featurestore.connection import redis_failure

    if not sids:
        return {}
    only = ft.Manifest(manifest.features_dir, {s: manifest.snapshots[s] for s in sids})
    rows = {}
    for view, (table, push_source) in sorted(sources.items()):
        data = ft.read_tables(table_files(only, table))
        if data is None or data.num_rows == 0:
            continue
        frame = _latest_per_subject(data.to_pandas())
        try:
            store.push(push_source, frame, to=PushMode.ONLINE)
        except Exception as exc:
            raise redis_failure(exc, redis_url, f"pushing {len(frame)} row(s) of {view!r}") from exc
        rows[view] = len(frame)
    return rows


__all__ = ["PushResult", "push_file", "wait_past_latest_snapshot"]
