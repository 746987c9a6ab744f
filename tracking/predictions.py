"""``predictions``: one document per ``eegfs predict`` run.

::

    {_id, model: {name, version, sha256, experiment_id}, feature_service, snapshot_id,
     snapshot_ids, pushed_snapshot_ids, input: {path, sha256, size_bytes},
     counts: {windows, subjects, labelled_windows, sources: {snapshot, online, pushed, missing}},
     subject_sources: {subject_id: source}, metrics: {subject_nrmse, nrmse} (with targets),
     timing: {load_s, index_s, hash_s, features_s, inference_s, write_s, total_s},
     out: {windows, subjects}, host, created_at}

Written through :func:`tracking.database.open_database` (the durable write concern of every
tracking write) under a client-made ``_id``, so a retried insert never adds a second document.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import pymongo
from bson import ObjectId

from tracking.database import open_database
from tracking.schema import PREDICTIONS
from tracking.timeutil import utcnow


def record_prediction(settings, document: Mapping[str, Any]) -> ObjectId:
    """Store ``document`` (``host`` and ``created_at`` added when absent); returns its ``_id``.

    Idempotent: the ``_id`` is made here (or given) and the write is an upsert on it.
    """
    doc = dict(document)
    doc.setdefault("_id", ObjectId())
    doc.setdefault("host", socket.gethostname())
    doc.setdefault("created_at", utcnow())
    with open_database(settings) as db:
        db[PREDICTIONS].update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
    return doc["_id"]


def list_predictions(
    settings, *, model: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The latest ``limit`` prediction documents (of model ``model`` when given), newest first."""
    query = {} if model is None else {"model.name": model}
    with open_database(settings) as db:
        cursor = (
            db[PREDICTIONS]
            .find(query, {"subject_sources": 0})
            .sort("created_at", pymongo.DESCENDING)
            .limit(int(limit))
        )
        return list(cursor)


__all__ = ["list_predictions", "record_prediction"]
