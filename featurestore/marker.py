"""The materialization marker: one small Redis key that says what the online store serves.

:func:`featurestore.materialize.materialize_snapshots` writes it (JSON: ``store_snapshot_id``,
``snapshot_ids``, ``materialized_at``, ``end``, ``nonce``) after every materialization, and
:func:`featurestore.push.push_file` adds the snapshots it pushed (:func:`add_to_marker`, which
also sets ``pushed``). Both write it only once every row is online, so the marker never names a
snapshot whose rows are not all in Redis. Every online read looks at it, and a client that sees a
new value drops its online cache.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import redis

from featurestore.connection import redis_failure
from pipelines.feature_tables import short_hash


def marker_key(project: str) -> str:
    """Redis key of the materialization marker of ``project`` (JSON)."""
    return f"eegfs:feast:{project}:materialization"


def read_marker_raw(redis_client, project: str, url: str) -> bytes | None:
    """The marker's raw value (None when nothing was materialized)."""
    try:
        return redis_client.get(marker_key(project))
    except Exception as exc:
        raise redis_failure(exc, url, "reading the materialization marker") from exc


def parse_marker(raw: bytes | None) -> dict | None:
    """The marker as a dict (None when absent or not JSON)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def marker_value(snapshot_ids: Iterable[str], **extra) -> dict:
    """A new marker naming ``snapshot_ids`` (the id of the set, a time and a fresh nonce)."""
    served = sorted(set(snapshot_ids))
    return {
        "store_snapshot_id": "fs_" + short_hash(served),
        "snapshot_ids": served,
        "materialized_at": datetime.now(UTC).isoformat(),
        **extra,
        "nonce": uuid.uuid4().hex,
    }


def merge_marker(
    redis_client,
    project: str,
    url: str,
    snapshot_ids: Iterable[str],
    *,
    end: str | None = None,
    pushed: list[str] | None = None,
) -> dict:
    """Make the marker name ``snapshot_ids`` as well as those it already names, atomically
    (WATCH/MULTI, retried when another writer got in between), so a push and a materialize that
    finish at the same moment never drop each other's snapshots.

    ``end`` replaces the stored materialization end (kept when None); ``pushed`` records the
    ids a push added. Returns the new value.
    """
    key = marker_key(project)
    try:
        with redis_client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    old = parse_marker(pipe.get(key)) or {}
                    extra: dict = {}
                    if end is not None or "end" in old:
                        extra["end"] = end if end is not None else old["end"]
                    if pushed is not None:
                        extra["pushed"] = pushed
                    ids = [*old.get("snapshot_ids", []), *snapshot_ids]
                    value = marker_value(ids, **extra)
                    pipe.multi()
                    pipe.set(key, json.dumps(value))
                    pipe.execute()
                    return value
                except redis.WatchError:
                    continue
    except Exception as exc:
        raise redis_failure(exc, url, "updating the materialization marker") from exc


def add_to_marker(redis_client, project: str, url: str, snapshot_ids: Iterable[str]) -> dict:
    """Add the snapshots a push wrote to the marker; ``pushed`` lists them, ``end`` is kept."""
    added = sorted(set(snapshot_ids))
    return merge_marker(redis_client, project, url, added, pushed=added)


__all__ = [
    "add_to_marker",
    "merge_marker",
    "marker_key",
    "marker_value",
    "parse_marker",
    "read_marker_raw",
]
