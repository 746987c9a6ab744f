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
    settings: Settings,
    subject_ids: Sequence[str],
    services: Sequence[str] | None = None,
    *,
    allow_missing: bool = False,
) -> list[dict]:
    """``eegfs features get``: per subject, its online features per service (JSON-able, NaN ->
    None) and the served snapshot id.

    Raises
    ------
    SubjectIdError
        (a ``ValueError``) for a malformed id, before any server is asked.
    FeatureStoreError
        When a subject has no value at all in a service (it is not in the online store), unless
        ``allow_missing``, which keeps its row of nulls.
    """
    ids = normalize_subject_ids(subject_ids)
    services = list(services or INPUT_SERVICES.values())
    with FeatureStoreClient(settings, cache_size=0) as client:
        served = client.served_snapshot_id()
        if served is None:
            raise FeatureStoreError(
                "the online store holds no materialization; run `eegfs features materialize`"
            )
        frames = {s: client.get_online_features(ids, s) for s in services}
    out = []
    for i, sid in enumerate(ids):
        rec: dict[str, Any] = {"subject_id": sid, "served_snapshot_id": served, "features": {}}
        for service, df in frames.items():
            row = df.iloc[i]
            rec["features"][service] = {
                c: json_value(row[c]) for c in df.columns if c != ENTITY_KEY
            }
        out.append(rec)
    if not allow_missing:
        _check_present(out, settings)
    return out


def _check_present(records: list[dict], settings: Settings) -> None:
    """Raise for the first subject whose features in a service are all missing."""
    for rec in records:
        for service, values in rec["features"].items():
            if values and all(v is None for v in values.values()):
                raise FeatureStoreError(
                    f"subject {rec['subject_id']} is not in the online store (service {service}, "
                    f"Redis {mask_uri(settings.redis_url)}); check the id, or build and "
                    "materialize the file that holds it; pass --allow-missing to print its "
                    "row of nulls"
                )


__all__ = ["apply_feature_repo", "materialize_features", "online_features_record"]
