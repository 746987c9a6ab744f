"""``eegfs datasets register FILES``: the catalogue of HDF5 window files in ``datasets``.

This module only records: the CLI reads each file with ``pipelines.hdf5_io.open_windows`` (the
feature build's reader, so the same files, layouts and ``--map``/``--layout`` options are
accepted) and hashes it with ``services.files.sha256_file``, then passes plain dicts here.

One document per file content (unique ``sha256``)::

    {sha256, path, host, locations: [{host, path}], challenge, layout, dataset, release, task,
     windows, channels, samples, sfreq, window_s, n_subjects, dtype, compression, size_bytes,
     attrs: {...root attributes...}, warnings: [...], registered_at, updated_at,
     quality: {snapshot_id, built_at, code_version, gates_version, accept_failing, n_subjects,
               n_promoted, n_held_back, file_failures: [...],
               rejected: [{subject_id, reasons: [...], promoted}]}}

``quality`` (optional) is what the feature store's data-quality gates decided about the file's
newest snapshot; the CLI composes it from the store's manifest
(``pipelines.quality_report.dataset_quality``) and this module stores it as given.

Registering the same file again updates it in place; the same content at another path adds a
location.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.database import Database

from tracking.documents import to_document
from tracking.errors import DatasetError
from tracking.schema import DATASETS
from tracking.timeutil import utcnow

#: Keys every record must hold (the rest of the schema above is optional).
REQUIRED = ("path", "sha256", "challenge", "windows", "channels", "samples")


def _plain(value: Any) -> Any:
    """A root attribute as a plain value: bytes decoded, NumPy scalars/arrays as Python ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return _plain(item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return [_plain(v) for v in tolist()] if getattr(value, "ndim", 0) else tolist()
    return value


def _check(record: Mapping[str, Any], index: int) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"dataset record {index} is a {type(record).__name__}, expected a dict of metadata"
        )
    label = record.get("path", f"record {index}")
    missing = [k for k in REQUIRED if record.get(k) in (None, "")]
    if missing:
        raise DatasetError(
            f"{label}: dataset metadata lacks {', '.join(missing)} (has {', '.join(sorted(record))}); "
            "read the file with `eegfs datasets register`, which fills them"
        )
    meta = dict(record)
    meta["path"] = str(meta["path"])
    meta["attrs"] = {str(k): _plain(v) for k, v in (meta.get("attrs") or {}).items()}
    meta.setdefault("warnings", [])
    return to_document(meta, str(label))


def record_datasets(db: Database, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Upsert one ``datasets`` document per record (keyed by ``sha256``); returns the stored ones.

    Parameters
    ----------
    db : Database
        Tracking database.
    records : sequence of dict
        Metadata of each file, already read and hashed: ``path``, ``sha256``, ``challenge``,
        ``windows``, ``channels``, ``samples`` (required) and optionally ``layout``, ``dataset``,
        ``release``, ``task``, ``sfreq``, ``window_s``, ``n_subjects``, ``dtype``,
        ``compression``, ``size_bytes``, ``attrs``, ``warnings``, ``quality`` (a plain dict).

    Raises
    ------
    DatasetError
        When no record is given or one lacks a required key; every record is checked before
        anything is written, so one bad record leaves the catalogue untouched.
    """
    if not records:
        raise DatasetError("no files given; pass one or more HDF5 files")
    checked = [_check(r, i) for i, r in enumerate(records)]
    host = socket.gethostname()
    now = utcnow()
    stored = []
    for meta in checked:
        db[DATASETS].update_one(
            {"sha256": meta["sha256"]},
            {
                "$set": {**meta, "host": host, "updated_at": now},
                "$addToSet": {"locations": {"host": host, "path": meta["path"]}},
                "$setOnInsert": {"registered_at": now},
            },
            upsert=True,
        )
        stored.append(db[DATASETS].find_one({"sha256": meta["sha256"]}))
    return stored


def list_datasets(db: Database) -> list[dict[str, Any]]:
    """Every catalogued file, by challenge then release."""
    return list(db[DATASETS].find({}).sort([("challenge", 1), ("release", 1), ("path", 1)]))


__all__ = ["REQUIRED", "list_datasets", "record_datasets"]
