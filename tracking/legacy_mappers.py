"""Rows of the EEG2025 SQLite run log -> tracking documents: pure functions, one per table.

Nothing here reads a file or talks to MongoDB: each mapper takes a row (a dict of SQLite cells)
and what it needs to know about the rest of the source, and returns the document to store. The
file checks (does a checkpoint or cache file exist here, what is its sha256) are done by the
caller (:mod:`tracking.migrate`) and passed in as a :class:`FileCheck`.

Where each column goes:

=================  =====================================================================
training_runs      experiments: challenge, name (model_name), model.architecture
                   (config.model), started_at/ended_at (start_time/end_time), status
                   (``stale`` for runs left ``running``; ``original_status`` keeps it),
                   summary.best_val_loss/best_epoch/total_epochs (derived from the epochs
                   when NULL; ``legacy.derived`` lists them), config (JSON, redacted; text
                   that is not JSON is kept as ``config.raw`` and ``legacy.config_error``
                   says so), notes
epoch_history      epochs: epoch, metrics.train_loss/val_loss/learning_rate/duration_s,
                   logged_at (timestamp)
model_checkpoints  checkpoints: epoch, path (file_path), size_bytes (file_size_mb, or the
                   file's size), metrics.val_loss, created_at, is_best (the lowest val_loss
                   of the run; ``legacy.is_best_original`` keeps the stored flag),
                   sha256 + checksum_status (``unverifiable`` when the file is not here)
subjects           subjects: subject_id (normalised), age, sex, scores.p_factor, releases,
                   sessions_count, trials_count, quality.legacy_data_quality, annotations
cache_files        datasets: path, challenge, release, size_bytes, windows, channels,
                   samples, registered_at, checksum (+ status)
=================  =====================================================================

Every document carries ``legacy = {source: <sha256 of the file>, table, id, path,
timezone_assumed, row}`` (``row`` is the original row, blobs as hex).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bson import ObjectId

from services.ids import normalize_subject_id
from tracking.documents import redact, redact_text, to_document
from tracking.errors import MigrationError
from tracking.schema import SCHEMA_VERSION
from tracking.status import COMPLETED, FAILED, STALE, STOPPED

Row = Mapping[str, Any]

#: Legacy statuses -> ours. A run left "running" in the file never finished: it is stale.
STATUS_MAP = {
    "running": STALE,
    "completed": COMPLETED,
    "complete": COMPLETED,
    "finished": COMPLETED,
    "failed": FAILED,
    "error": FAILED,
    "crashed": FAILED,
    "stopped": STOPPED,
    "interrupted": STOPPED,
    "cancelled": STOPPED,
    "killed": STOPPED,
}
MB = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
#: epoch_history column -> our metric name.
_EPOCH_METRICS = {
    "train_loss": "train_loss",
    "val_loss": "val_loss",
    "learning_rate": "learning_rate",
    "duration_seconds": "duration_s",
}


# --- cells --------------------------------------------------------------------------------------
def legacy_bool(value: Any) -> bool | None:
    """SQLite booleans as found in the wild: 0/1, b'\\x01' blobs, 'true'/'1' strings."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return any(bytes(value))
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes", "y")
    return bool(value)


def plain(value: Any) -> Any:
    """A SQLite cell as a BSON-safe value (blobs as hex, non-finite floats as None)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def size_from_mb(value: Any) -> int | None:
    """A ``file_size_mb`` cell as bytes (None stays None)."""
    return None if value is None else int(round(value * MB))


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class LegacyClock:
    """Parses naive local timestamps in one assumed timezone, remembering the unparseable ones.

    Timestamps come back timezone-aware in UTC at BSON precision (milliseconds).
    """

    def __init__(self, timezone: str) -> None:
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise MigrationError(
                f"unknown timezone {timezone!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
            ) from exc
        self.unparseable: list[str] = []

    def __call__(self, text: Any) -> dt.datetime | None:
        if text in (None, ""):
            return None
        try:
            value = dt.datetime.fromisoformat(str(text).strip())
        except ValueError:
            self.unparseable.append(str(text))
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        value = value.astimezone(dt.UTC)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class LegacySource:
    """The source file every migrated document points back to."""

    sha256: str
    path: str
    timezone: str

    def legacy(self, table: str, row_id: Any, row: Row, **extra: Any) -> dict[str, Any]:
        """The ``legacy`` sub-document: where the row came from and the row itself."""
        return {
            "source": self.sha256,
            "table": table,
            "id": row_id,
            "path": self.path,
            "timezone_assumed": self.timezone,
            "row": {k: plain(v) for k, v in row.items()},
            **extra,
        }


@dataclass(frozen=True)
class FileCheck:
    """What the migration found about a file a row names (see :mod:`tracking.migrate`)."""

    sha256: str | None
    status: str
    size_bytes: int | None = None


# --- training_runs ------------------------------------------------------------------------------
def map_status(original: Any) -> str:
    """Our status for a legacy one; unknown or missing statuses are ``stale``."""
    if original is None:
        return STALE
    return STATUS_MAP.get(str(original).strip().lower(), STALE)


def parse_config(text: Any) -> tuple[dict[str, Any], str | None]:
    """The run's config as a dict and, when the text is not JSON, why (kept as ``raw``)."""
    if not text:
        return {}, None
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}, "not JSON"
    return (config if isinstance(config, dict) else {"value": config}), None


def run_summary(row: Row, epochs: Mapping[int, Row]) -> tuple[dict[str, Any], list[str]]:
    """``summary`` of a run and the names of the values derived from its epochs.

    best_val_loss, best_epoch and total_epochs come from the row; where the row has NULL and
    the epochs have values, they are derived (the lowest finite val_loss, the last epoch).
    """
    valid = [(e["val_loss"], n) for n, e in epochs.items() if is_finite_number(e.get("val_loss"))]
    best_val, best_epoch = row.get("best_val_loss"), row.get("best_epoch")
    total = row.get("total_epochs")
    derived = []
    if best_val is None and valid:
        best_val = min(valid)[0]
        derived.append("best_val_loss")
    if best_epoch is None and valid:
        best_epoch = min(valid)[1]
        derived.append("best_epoch")
    if total is None and epochs:
        total = max(epochs)
        derived.append("total_epochs")
    values = {
        "val_loss": best_val,
        "best_val_loss": best_val,
        "best_epoch": best_epoch,
        "total_epochs": total,
    }
    return {k: v for k, v in values.items() if v is not None}, derived


def epoch_metrics(row: Row) -> dict[str, float]:
    """``metrics`` of an epoch_history row (NULL columns left out)."""
    return {
        ours: float(row[theirs])
        for theirs, ours in _EPOCH_METRICS.items()
        if row.get(theirs) is not None
    }


def map_run(
    row: Row, epochs: Mapping[int, Row], source: LegacySource, clock: LegacyClock
) -> dict[str, Any]:
    """A ``training_runs`` row (with its epochs, by epoch number) as an experiment document."""
    run_id = row["run_id"]
    raw_config, config_error = parse_config(row.get("config"))
    config = to_document(redact(raw_config), f"training_runs {run_id} config")
    summary, derived = run_summary(row, epochs)
    extra: dict[str, Any] = {"derived": derived}
    if config_error is not None:
        extra["config_error"] = config_error
    last = epochs[max(epochs)] if epochs else None
    started = clock(row.get("start_time"))
    return {
        "name": row.get("model_name") or f"legacy-run-{run_id}",
        "challenge": row.get("challenge"),
        "model": {
            "name": row.get("model_name"),
            "architecture": config.get("model"),
            "parameters": None,
        },
        "config": config,
        "data": {},
        "features": {},
        "code": {"commit": None, "dirty": None},
        "status": map_status(row.get("status")),
        "original_status": row.get("status"),
        "started_at": started,
        "ended_at": clock(row.get("end_time")),
        "heartbeat": clock(last["timestamp"]) if last else started,
        "created_by": None,
        "host": None,
        "tags": ["migrated"],
        "notes": redact_text(row.get("notes") or ""),
        "summary": summary,
        "last_epoch": max(epochs) if epochs else None,
        "last_metrics": epoch_metrics(last) if last else {},
        "best_checkpoint": None,
        "error": None,
        "traceback": None,
        "schema_version": SCHEMA_VERSION,
        "legacy": source.legacy("training_runs", run_id, row, **extra),
    }


# --- epoch_history ------------------------------------------------------------------------------
def index_epochs(
    rows: Iterable[Row],
) -> tuple[dict[Any, dict[int, Row]], dict[tuple[Any, int], list[Any]]]:
    """epoch_history rows by run and epoch number, and the ids of the rows that repeat an epoch.

    Rows come in id order and the last row of a (run, epoch) wins; the ids of the earlier ones
    are returned under that (run, epoch) key.
    """
    by_run: dict[Any, dict[int, Row]] = defaultdict(dict)
    merged: dict[tuple[Any, int], list[Any]] = defaultdict(list)
    for row in rows:
        run_epochs = by_run[row["run_id"]]
        if row["epoch"] in run_epochs:
            merged[(row["run_id"], row["epoch"])].append(run_epochs[row["epoch"]]["id"])
        run_epochs[row["epoch"]] = row
    return dict(by_run), dict(merged)


def map_epoch(
    row: Row,
    experiment_id: ObjectId | None,
    source: LegacySource,
    clock: LegacyClock,
    merged_ids: list[Any],
) -> dict[str, Any]:
    """An ``epoch_history`` row as an epoch document of experiment ``experiment_id``."""
    return {
        "experiment_id": experiment_id,
        "epoch": row["epoch"],
        "metrics": epoch_metrics(row),
        "logged_at": clock(row.get("timestamp")),
        "host": None,
        "legacy": source.legacy("epoch_history", row["id"], row, merged_ids=merged_ids),
    }


# --- model_checkpoints --------------------------------------------------------------------------
def shared_checkpoint_paths(rows: Iterable[Row]) -> set[str]:
    """File paths that checkpoints of more than one run point at (each run overwrote it)."""
    runs_of_path: dict[str, set] = defaultdict(set)
    for row in rows:
        if row.get("file_path"):
            runs_of_path[row["file_path"]].add(row["run_id"])
    return {path for path, runs in runs_of_path.items() if len(runs) > 1}


def best_checkpoint_row(rows: Iterable[Row]) -> Row | None:
    """The checkpoint of a run with the lowest finite val_loss (ties: the lowest id), or None."""
    scored = [r for r in rows if is_finite_number(r.get("val_loss"))]
    return min(scored, key=lambda r: (r["val_loss"], r["checkpoint_id"])) if scored else None


def map_checkpoint(
    row: Row,
    experiment_id: ObjectId | None,
    *,
    is_best: bool,
    file: FileCheck,
    source: LegacySource,
    clock: LegacyClock,
) -> dict[str, Any]:
    """A ``model_checkpoints`` row as a checkpoint document.

    ``file_size_mb`` wins over the size of the file found here; ``is_best`` is decided for the
    whole run (:func:`best_checkpoint_row`), the stored flag is kept in the legacy section.
    """
    size = size_from_mb(row.get("file_size_mb"))
    return {
        "experiment_id": experiment_id,
        "epoch": row.get("epoch"),
        "path": row.get("file_path") or "",
        "host": None,
        "size_bytes": size if size is not None else file.size_bytes,
        "sha256": file.sha256,
        "checksum_status": file.status,
        "metrics": {} if row.get("val_loss") is None else {"val_loss": row["val_loss"]},
        "is_best": is_best,
        "created_at": clock(row.get("timestamp")),
        "gridfs_id": None,
        "upload_status": "not requested",
        "legacy": source.legacy(
            "model_checkpoints",
            row["checkpoint_id"],
            row,
            is_best_original=legacy_bool(row.get("is_best")),
        ),
    }


# --- subjects -----------------------------------------------------------------------------------
def map_subject(row: Row, source: LegacySource, now: dt.datetime) -> tuple[str, dict[str, Any]]:
    """A ``subjects`` row as ``(subject_id, MongoDB update)`` for an upsert by subject_id.

    Values only fill a new document (``$setOnInsert``): what a participants.tsv sync wrote
    wins over the old file's. The release and the notes are added to ``releases`` and
    ``annotations``.

    Raises
    ------
    ValueError
        When the row's subject_id is not a subject id.
    """
    subject_id = normalize_subject_id(row["subject_id"])
    values = {
        "age": row.get("age"),
        "sex": row.get("sex"),
        "scores.p_factor": row.get("p_factor"),
        "sessions_count": row.get("n_sessions"),
        "trials_count": row.get("n_trials"),
        "quality.legacy_data_quality": row.get("data_quality"),
    }
    on_insert: dict[str, Any] = {"created_at": now, "updated_at": now}
    on_insert.update({k: plain(v) for k, v in values.items() if v is not None})
    add: dict[str, Any] = {}
    if row.get("release"):
        add["releases"] = row["release"]
    if row.get("notes"):
        add["annotations"] = {"text": row["notes"], "author": "sqlite migration", "at": None}
    else:
        on_insert["annotations"] = []
    update: dict[str, Any] = {
        "$set": {"legacy": source.legacy("subjects", row["subject_id"], row)},
        "$setOnInsert": on_insert,
    }
    if add:
        update["$addToSet"] = add
    return subject_id, update


# --- cache_files --------------------------------------------------------------------------------
def stored_checksum(value: Any) -> str | None:
    """A cache_files checksum cell as a lowercase sha256, or None when it is not one."""
    if isinstance(value, str) and _HEX64.match(value):
        return value.lower()
    return None


def map_cache_file(
    row: Row, *, file: FileCheck, source: LegacySource, clock: LegacyClock
) -> dict[str, Any]:
    """A ``cache_files`` row as a datasets document (``file`` is the check of its HDF5 file)."""
    file_path = row.get("file_path") or ""
    return {
        "path": file_path,
        "challenge": row.get("challenge"),
        "release": row.get("release"),
        "size_bytes": size_from_mb(row.get("file_size_mb")),
        "windows": row.get("n_windows"),
        "channels": row.get("n_channels"),
        "samples": row.get("n_times"),
        "registered_at": clock(row.get("created_at")),
        "sha256": file.sha256,
        "checksum": {"value": row.get("checksum"), "status": file.status},
        "locations": [{"host": None, "path": file_path}],
        "legacy": source.legacy("cache_files", row["cache_id"], row),
    }


__all__ = [
    "STATUS_MAP",
    "FileCheck",
    "LegacyClock",
    "LegacySource",
    "best_checkpoint_row",
    "epoch_metrics",
    "index_epochs",
    "legacy_bool",
    "map_cache_file",
    "map_checkpoint",
    "map_epoch",
    "map_run",
    "map_status",
    "map_subject",
    "parse_config",
    "plain",
    "run_summary",
    "shared_checkpoint_paths",
    "stored_checksum",
]
