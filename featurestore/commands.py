"""One call per ``eegfs features`` command: apply, materialize, get (``env`` is in
:mod:`featurestore.shell_env`). Each returns what the command prints."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from featurestore.client import FeatureStoreClient
from featurestore.errors import FeatureStoreError
from featurestore.labels import INPUT_SERVICES
from featurestore.repo import ENTITY_KEY, registry_path
from featurestore.values import json_value
from services.connections import mask_uri
from services.ids import normalize_subject_ids
from services.settings import Settings


def apply_feature_repo(settings: Settings) -> str:
    """``eegfs features apply``: register the definitions; returns a one-line summary."""
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.apply()
        store = client.store
        return (
            f"applied project {client.project!r}: {len(store.list_feature_views())} feature "
            f"views, {len(store.list_feature_services())} feature services; registry "
            f"{registry_path(settings)}"
        )


def materialize_features(settings: Settings, end: datetime | None = None) -> str:
    """``eegfs features materialize``: load new snapshots into Redis; returns a summary."""
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.materialize(end)
        return (
            f"online store serves {client.served_snapshot_id()} "
            f"(Redis {mask_uri(settings.redis_url)})"
        )


def online_features_record(
    settings: Settings, subject_ids: Sequence[str], services: Sequence[str] | None = None
) -> list[dict]:
    """``eegfs features get``: per subject, its online features per service (JSON-able, NaN ->
    None) and the served snapshot id."""
    services = list(services or INPUT_SERVICES.values())
    with FeatureStoreClient(settings, cache_size=0) as client:
        served = client.served_snapshot_id()
        if served is None:
            raise FeatureStoreError(
                "the online store holds no materialization; run `eegfs features materialize`"
            )
        frames = {s: client.get_online_features(subject_ids, s) for s in services}
    out = []
    for i, sid in enumerate(normalize_subject_ids(subject_ids)):
        rec: dict[str, Any] = {"subject_id": sid, "served_snapshot_id": served, "features": {}}
        for service, df in frames.items():
            row = df.iloc[i]
            rec["features"][service] = {
                c: json_value(row[c]) for c in df.columns if c != ENTITY_KEY
            }
        out.append(rec)
    return out


__all__ = ["apply_feature_repo", "materialize_features", "online_features_record"]
