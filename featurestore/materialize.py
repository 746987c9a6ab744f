"""``feast apply`` of the repository and materialization of new snapshots into Redis."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from featurestore import feast_adapter
from featurestore.connection import redis_failure
from featurestore.errors import FeatureStoreError
from featurestore.labels import check_label_exclusion
from featurestore.marker import merge_marker, parse_marker, read_marker_raw
from featurestore.repo import (
    TABLE_TAG,
    batch_sources,
    load_repo_objects,
    registry_path,
    require_registry,
)
from pipelines import feature_tables as ft
from pipelines.errors import PipelineError
from services.settings import Settings

_feast_log = logging.getLogger("featurestore.feast")
#: An ANSI escape sequence (colours, styles).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def apply_repo(store, settings: Settings, project: str) -> None:
    """Register the definitions of ``settings.feature_repo`` in ``store``'s registry (idempotent).

    Refuses an input service holding a label. Source paths are re-based on
    ``settings.features_dir`` through their ``eegfs_table`` tag; objects removed from the
    repository are removed from the registry (and their online rows by Feast).
    """
    objs = load_repo_objects(settings.feature_repo)
    check_label_exclusion(objs.feature_services, objs.feature_views)
    base = Path(settings.features_dir).resolve()
    for source in batch_sources(objs.sources):
        table = (source.tags or {}).get(TABLE_TAG)
        if table:
            source.file_options.uri = str(base / table)
    registry_path(settings).parent.mkdir(parents=True, exist_ok=True)
    try:
        to_apply, to_delete = feast_adapter.plan_apply(store, project, objs)
        store.apply([*objs.sources, *to_apply], objects_to_delete=to_delete, partial=False)
        store.refresh_registry()
    except PipelineError:
        raise
    except Exception as exc:
        raise redis_failure(exc, settings.redis_url, "feast apply") from exc


def view_tables(store) -> dict[str, str]:
    """Feature view name -> table (relative to features_dir) of its source."""
    out = {}
    for view in store.list_feature_views():
        table = (view.batch_source.tags or {}).get(TABLE_TAG)
        if table:
            out[view.name] = table
    return out


def _first_new_stamps(new: dict[str, dict], table: str) -> list[datetime]:
    """``event_timestamp`` of the new snapshots that hold files of ``table``."""
    return [
        datetime.fromisoformat(s["event_timestamp"])
        for s in new.values()
        if table in {str(Path(p).parent) for p in s.get("files", {}).values()}
    ]


def materialize_snapshots(
    store, redis_client, settings: Settings, project: str, end: datetime | None = None
) -> dict:
    """Load every snapshot not yet in Redis (up to ``end``, default now); returns the new marker.

    Each view is materialized from the oldest new snapshot's ``event_timestamp``, so snapshots
    older than a TTL, or committed while an earlier materialization ran, are never skipped. Then
    writes the marker key that tells every client to drop its online cache. A snapshot whose
    commit a killed build left half done is completed first (Feast reads whole table
    directories), unless a build holds the lock: that build has done it.
    """
    require_registry(settings)
    ft.finish_interrupted_build(settings.features_dir)
    manifest = ft.Manifest.load(settings.features_dir)
    if not manifest.snapshots:
        raise FeatureStoreError(
            f"no feature snapshots under {settings.features_dir}; run `eegfs features build`"
        )
    end = (end or datetime.now(UTC)).astimezone(UTC)
    marker = parse_marker(read_marker_raw(redis_client, project, settings.redis_url)) or {}
    done = set(marker.get("snapshot_ids", []))
    ready = {
        sid: s
        for sid, s in manifest.snapshots.items()
        if datetime.fromisoformat(s["event_timestamp"]) <= end
    }
    new = {sid: s for sid, s in ready.items() if sid not in done}
    store.refresh_registry()
    for view, table in sorted(view_tables(store).items()):
        stamps = _first_new_stamps(new, table)
        if stamps:
            _materialize_view(store, settings, view, min(stamps) - timedelta(seconds=1), end)
    # Merged, not overwritten: a push that finished meanwhile keeps its snapshots listed.
    return merge_marker(
        redis_client, project, settings.redis_url, sorted(done | set(ready)), end=end.isoformat()
    )


@contextmanager
def _printed_to_log() -> Iterator[None]:
    """Route what Feast prints to stdout (coloured "Materializing ..." lines) to the log.

    The command prints its own summary; Feast's lines carry raw ANSI colour codes whatever the
    output is, so they go to logger ``featurestore.feast`` at INFO (``--log-level INFO``), without
    the codes.
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in _ANSI.sub("", buffer.getvalue()).splitlines():
            if line.strip():
                _feast_log.info("%s", line.strip())


def _materialize_view(store, settings: Settings, view: str, start: datetime, end: datetime):
    try:
        with _printed_to_log():
            store.materialize(start_date=start, end_date=end, feature_views=[view])
    except Exception as exc:
        doing = f"materializing view {view!r} from {start.isoformat()} to {end.isoformat()}"
        raise redis_failure(exc, settings.redis_url, doing) from exc


__all__ = ["apply_repo", "materialize_snapshots", "view_tables"]
