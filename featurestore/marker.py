"""The materialization marker: one small Redis key that says what the online store serves.

:func:`featurestore.materialize.materialize` writes it (JSON: ``store_snapshot_id``,
``snapshot_ids``, ``materialized_at``, ``end``, ``nonce``) after every materialization; every
online read looks at it, and a client that sees a new value drops its online cache.
"""

from __future__ import annotations

import json

from featurestore.connection import redis_failure


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


def write_marker(redis_client, project: str, url: str, value: dict) -> None:
    """Write the marker (``value`` as JSON)."""
    try:
        redis_client.set(marker_key(project), json.dumps(value))
    except Exception as exc:
        raise redis_failure(exc, url, "writing the materialization marker") from exc


__all__ = ["marker_key", "parse_marker", "read_marker_raw", "write_marker"]
