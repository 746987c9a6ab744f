"""``eegfs migrate-sqlite PATH``: move an EEG2025 SQLite run log into MongoDB.

Source schema: tables ``subjects``, ``training_runs``, ``epoch_history``, ``model_checkpoints``,
``cache_files``, ``config`` and views ``best_models``, ``training_summary``. Where each column
goes:

=================  =====================================================================
training_runs      experiments: challenge, name (model_name), model.architecture
                   (config.model), started_at/ended_at (start_time/end_time), status
                   (``stale`` for runs left ``running``; ``original_status`` keeps it),
                   summary.best_val_loss/best_epoch/total_epochs (derived from the epochs
                   when NULL; ``legacy.derived`` lists them), config (JSON, redacted), notes
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
config             migrations: one document per source file with the config rows, the
                   counts, the notes and the rows the two views return
=================  =====================================================================

Every migrated document carries ``legacy = {source: <sha256 of the file>, table, id, row}``
(``row`` is the original row, blobs as hex) with a unique index, so a rerun inserts nothing
new. Naive timestamps are read in the timezone given (default UTC) and the assumption is
stored in ``legacy.timezone_assumed`` and in the migration document.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database

from services.files import sha256_file
from tracking.documents import redact, redact_text, to_document
from tracking.errors import MigrationError
from tracking.schema import (
    CHECKPOINTS,
    DATASETS,
    EPOCHS,
    EXPERIMENTS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SUBJECTS,
    ensure_indexes,
)
from tracking.status import COMPLETED, FAILED, RUNNING, STALE, STOPPED
from tracking.timeutil import utcnow

log = logging.getLogger(__name__)

REQUIRED_TABLES = ("training_runs", "epoch_history", "model_checkpoints")
OPTIONAL_TABLES = ("subjects", "cache_files", "config")
VIEWS = ("best_models", "training_summary")
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


@dataclass
class TableReport:
    table: str
    target: str
    rows: int = 0
    inserted: int = 0
    existing: int = 0
    skipped: int = 0


@dataclass
class MigrationReport:
    """What :func:`migrate_sqlite` did (or, with ``dry_run``, would do)."""

    source: Path
    sha256: str
    dry_run: bool
    timezone: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def inserted(self) -> int:
        return sum(t.inserted for t in self.tables.values())


def _legacy_bool(value: Any) -> bool | None:
    """SQLite booleans as found in the wild: 0/1, b'\\x01' blobs, 'true'/'1' strings."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return any(bytes(value))
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes", "y")
    return bool(value)


def _plain(value: Any) -> Any:
    """A SQLite cell as a BSON-safe value (blobs as hex, non-finite floats as None)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Clock:
    """Parses naive local timestamps in one assumed timezone, counting failures."""

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


def _read(path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    if not path.is_file():
        raise MigrationError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        names = {r["name"]: r["type"] for r in conn.execute("SELECT name, type FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise MigrationError(f"{path}: not an SQLite database ({exc})") from exc
    try:
        missing = [t for t in REQUIRED_TABLES if names.get(t) != "table"]
        if missing:
            found = (
                ", ".join(sorted(n for n, t in names.items() if t in ("table", "view"))) or "none"
            )
            raise MigrationError(
                f"{path}: not the EEG2025 run-log schema: table(s) {', '.join(missing)} missing "
                f"(found {found}); expected {', '.join(REQUIRED_TABLES + OPTIONAL_TABLES)}"
            )
        tables = {}
        for table in REQUIRED_TABLES + OPTIONAL_TABLES:
            if names.get(table) == "table":
                tables[table] = [
                    dict(r) for r in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')
                ]
            else:
                tables[table] = []
        views = {}
        for view in VIEWS:
            if names.get(view) == "view":
                try:
                    views[view] = [dict(r) for r in conn.execute(f'SELECT * FROM "{view}"')]
                except sqlite3.DatabaseError:
                    views[view] = []
        return tables, views
    finally:
        conn.close()


def migrate_sqlite(
    db: Database,
    path: Path,
    *,
    dry_run: bool = False,
    timezone: str = "UTC",
) -> MigrationReport:
    """Migrate an EEG2025 SQLite run log into the tracking collections (idempotent).

    Parameters
    ----------
    path:
        The SQLite file (opened read-only).
    dry_run:
        Read and map everything, count what would be inserted, write nothing.
    timezone:
        IANA zone the file's naive timestamps are assumed to be in (recorded on every document).

    Raises
    ------
    MigrationError
        When the file is not an SQLite database with the EEG2025 tables.
    """
    path = Path(path).resolve()
    tables, views = _read(path)
    source = sha256_file(path)
    clock = _Clock(timezone)
    report = MigrationReport(path, source, dry_run, timezone)
    report.views = {name: len(rows) for name, rows in views.items()}
    if not dry_run:
        ensure_indexes(db)

    previous = db[MIGRATIONS].find_one({"source.path": str(path), "source.sha256": {"$ne": source}})
    if previous is not None:
        report.notes.append(
            f"{path} was migrated before with another content hash ({previous['source']['sha256'][:12]}): "
            "its rows count as a new source and are added again; remove the older copies with "
            "`legacy.source` if that is not wanted"
        )

    def legacy(table: str, row_id: Any, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "source": source,
            "table": table,
            "id": row_id,
            "path": str(path),
            "timezone_assumed": timezone,
            "row": {k: _plain(v) for k, v in row.items()},
            **extra,
        }

    # --- experiments --------------------------------------------------------------------------
    epochs_by_run: dict[Any, dict[int, dict[str, Any]]] = defaultdict(dict)
    merged: dict[tuple[Any, int], list[Any]] = defaultdict(list)
    for row in tables["epoch_history"]:
        key = (row["run_id"], row["epoch"])
        if row["epoch"] in epochs_by_run[row["run_id"]]:
            merged[key].append(epochs_by_run[row["run_id"]][row["epoch"]]["id"])
        epochs_by_run[row["run_id"]][row["epoch"]] = row  # rows are in id order: the last wins
    if merged:
        report.notes.append(
            f"{sum(map(len, merged.values()))} epoch_history row(s) repeat an epoch of their run; "
            "the latest row of each is kept, the others' ids are in legacy.merged_ids"
        )
    run_ids = {row["run_id"] for row in tables["training_runs"]}
    checkpoints_by_run: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in tables["model_checkpoints"]:
        checkpoints_by_run[row["run_id"]].append(row)

    experiment_docs = []
    derived_count = 0
    for row in tables["training_runs"]:
        config_text = row.get("config")
        try:
            config = json.loads(config_text) if config_text else {}
            if not isinstance(config, dict):
                config = {"value": config}
        except json.JSONDecodeError:
            config = {"raw": config_text}
            report.notes.append(
                f"training_runs {row['run_id']}: config is not JSON; kept as config.raw"
            )
        config = to_document(redact(config), f"training_runs {row['run_id']} config")
        epochs = epochs_by_run.get(row["run_id"], {})
        valid = [
            (e["val_loss"], n)
            for n, e in epochs.items()
            if e.get("val_loss") is not None and math.isfinite(e["val_loss"])
        ]
        derived = []
        best_val, best_epoch, total = (
            row.get("best_val_loss"),
            row.get("best_epoch"),
            row.get("total_epochs"),
        )
        if best_val is None and valid:
            best_val = min(valid)[0]
            derived.append("best_val_loss")
        if best_epoch is None and valid:
            best_epoch = min(valid)[1]
            derived.append("best_epoch")
        if total is None and epochs:
            total = max(epochs)
            derived.append("total_epochs")
        derived_count += bool(derived)
        original = row.get("status")
        status = (
            STATUS_MAP.get(str(original).strip().lower(), STALE) if original is not None else STALE
        )
        last = epochs[max(epochs)] if epochs else None
        started = clock(row.get("start_time"))
        summary = {
            k: v
            for k, v in (
                ("val_loss", best_val),
                ("best_val_loss", best_val),
                ("best_epoch", best_epoch),
                ("total_epochs", total),
            )
            if v is not None
        }
        doc = {
            "name": row.get("model_name") or f"legacy-run-{row['run_id']}",
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
            "status": status,
            "original_status": original,
            "started_at": started,
            "ended_at": clock(row.get("end_time")),
            "heartbeat": clock(last["timestamp"]) if last else started,
            "created_by": None,
            "host": None,
            "tags": ["migrated"],
            "notes": redact_text(row.get("notes") or ""),
            "summary": summary,
            "last_epoch": max(epochs) if epochs else None,
            "last_metrics": _epoch_metrics(last) if last else {},
            "best_checkpoint": None,
            "error": None,
            "traceback": None,
            "schema_version": SCHEMA_VERSION,
            "legacy": legacy("training_runs", row["run_id"], row, derived=derived),
        }
        experiment_docs.append(doc)
    if derived_count:
        report.notes.append(
            f"{derived_count} run(s) had NULL best_val_loss/best_epoch/total_epochs although epochs "
            "exist; derived from epoch_history (listed in legacy.derived)"
        )
    if any(r.get("status") == RUNNING for r in tables["training_runs"]):
        n = sum(r.get("status") == RUNNING for r in tables["training_runs"])
        report.notes.append(
            f"{n} run(s) were left 'running' in the file: stored as 'stale' "
            "(original_status keeps 'running')"
        )
    exp_ids = _upsert(db, EXPERIMENTS, "training_runs", experiment_docs, report, dry_run)
    run_to_exp = {doc["legacy"]["id"]: exp_ids[i] for i, doc in enumerate(experiment_docs)}

    # --- epochs -------------------------------------------------------------------------------
    epoch_docs = []
    orphans = 0
    for run_id, epochs in epochs_by_run.items():
        for number, row in sorted(epochs.items()):
            if run_id not in run_ids:
                orphans += 1
                continue
            epoch_docs.append(
                {
                    "experiment_id": run_to_exp[run_id],
                    "epoch": number,
                    "metrics": _epoch_metrics(row),
                    "logged_at": clock(row.get("timestamp")),
                    "host": None,
                    "legacy": legacy(
                        "epoch_history", row["id"], row, merged_ids=merged.get((run_id, number), [])
                    ),
                }
            )
    _upsert(db, EPOCHS, "epoch_history", epoch_docs, report, dry_run)
    report.tables["epoch_history"].rows = len(tables["epoch_history"])
    report.tables["epoch_history"].skipped = orphans + sum(map(len, merged.values()))
    if orphans:
        report.notes.append(
            f"{orphans} epoch_history row(s) point at a run_id missing from training_runs: skipped"
        )

    # --- checkpoints --------------------------------------------------------------------------
    path_runs: dict[str, set] = defaultdict(set)
    for row in tables["model_checkpoints"]:
        if row.get("file_path"):
            path_runs[row["file_path"]].add(row["run_id"])
    shared_paths = {p for p, runs in path_runs.items() if len(runs) > 1}
    if shared_paths:
        n = sum(1 for r in tables["model_checkpoints"] if r.get("file_path") in shared_paths)
        report.notes.append(
            f"{n} checkpoint row(s) share a file path with another run's checkpoint "
            f"({len(shared_paths)} path(s)): each file was overwritten by a later run"
        )
    ckpt_docs, best_of_run = [], {}
    multi_best = 0
    missing_files = 0
    ckpt_orphans = 0
    for run_id, rows in checkpoints_by_run.items():
        if run_id not in run_ids:
            ckpt_orphans += len(rows)
            continue
        flagged = [r for r in rows if _legacy_bool(r.get("is_best"))]
        multi_best += len(flagged) > 1
        scored = [r for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
        best = min(scored, key=lambda r: (r["val_loss"], r["checkpoint_id"])) if scored else None
        for row in rows:
            file_path = row.get("file_path") or ""
            local = Path(file_path) if file_path else None
            size = (
                int(round(row["file_size_mb"] * MB))
                if row.get("file_size_mb") is not None
                else None
            )
            sha = None
            if local is None or not local.is_file():
                status = "unverifiable: file not found on this machine"
                missing_files += 1
            elif file_path in shared_paths:
                status = "unverifiable: path shared by several runs' checkpoints (overwritten)"
            else:
                sha, status = (
                    sha256_file(local),
                    "verified: computed from the file during migration",
                )
                size = size if size is not None else local.stat().st_size
            doc = {
                "experiment_id": run_to_exp[run_id],
                "epoch": row.get("epoch"),
                "path": file_path,
                "host": None,
                "size_bytes": size,
                "sha256": sha,
                "checksum_status": status,
                "metrics": {} if row.get("val_loss") is None else {"val_loss": row["val_loss"]},
                "is_best": best is not None and row is best,
                "created_at": clock(row.get("timestamp")),
                "gridfs_id": None,
                "upload_status": "not requested",
                "legacy": legacy(
                    "model_checkpoints",
                    row["checkpoint_id"],
                    row,
                    is_best_original=_legacy_bool(row.get("is_best")),
                ),
            }
            ckpt_docs.append(doc)
            if doc["is_best"]:
                best_of_run[run_id] = doc
    if multi_best:
        report.notes.append(
            f"{multi_best} run(s) had several checkpoints marked best; the one with the lowest "
            "val_loss is best now (legacy.is_best_original keeps the stored flag)"
        )
    if missing_files:
        report.notes.append(
            f"{missing_files} checkpoint file(s) are not on this machine: checksums unverifiable"
        )
    ckpt_ids = _upsert(
        db, CHECKPOINTS, "model_checkpoints", ckpt_docs, report, dry_run, unique_best=True
    )
    report.tables["model_checkpoints"].skipped = ckpt_orphans
    if not dry_run:
        for i, doc in enumerate(ckpt_docs):
            if doc["is_best"]:
                db[EXPERIMENTS].update_one(
                    {"_id": doc["experiment_id"]},
                    {
                        "$set": {
                            "best_checkpoint": {
                                "id": ckpt_ids[i],
                                "epoch": doc["epoch"],
                                "metrics": doc["metrics"],
                            }
                        }
                    },
                )

    # --- subjects -----------------------------------------------------------------------------
    _migrate_subjects(db, tables["subjects"], legacy, report, dry_run)
    # --- cache files --------------------------------------------------------------------------
    _migrate_cache_files(db, tables["cache_files"], legacy, clock, report, dry_run)

    if clock.unparseable:
        report.notes.append(
            f"{len(clock.unparseable)} timestamp(s) could not be parsed (e.g. {clock.unparseable[0]!r}); "
            "stored as null, the original text is in legacy.row"
        )
    report.notes.append(f"naive timestamps were read as {timezone} and converted to UTC")
    best_view = views.get("best_models")
    if best_view is not None:
        with_path = sum(r.get("file_path") is not None for r in best_view)
        flagged = sum(bool(_legacy_bool(r.get("is_best"))) for r in tables["model_checkpoints"])
        if len(best_view) != len(tables["training_runs"]) or with_path != flagged:
            report.notes.append(
                f"view best_models returns {len(best_view)} rows for {len(tables['training_runs'])} "
                f"runs, {with_path} with a checkpoint path although {flagged} checkpoint(s) are "
                "flagged best (its `is_best = 1` does not match blob booleans); `eegfs runs best` "
                "replaces it"
            )
    report.tables["config"] = TableReport("config", MIGRATIONS, rows=len(tables["config"]))
    if not dry_run:
        _record_migration(db, path, source, tables, views, report)
    return report


def _epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    names = {
        "train_loss": "train_loss",
        "val_loss": "val_loss",
        "learning_rate": "learning_rate",
        "duration_seconds": "duration_s",
    }
    return {
        ours: float(row[theirs]) for theirs, ours in names.items() if row.get(theirs) is not None
    }


def _upsert(
    db: Database,
    collection: str,
    table: str,
    docs: list[dict[str, Any]],
    report: MigrationReport,
    dry_run: bool,
    *,
    unique_best: bool = False,
) -> list[ObjectId | None]:
    """Insert each doc unless its legacy key exists; returns the _id of every doc, in order."""
    stats = report.tables.setdefault(table, TableReport(table, collection))
    stats.rows = len(docs)
    keys = [(d["legacy"]["source"], d["legacy"]["table"], d["legacy"]["id"]) for d in docs]
    existing = {
        (d["legacy"]["source"], d["legacy"]["table"], d["legacy"]["id"]): d["_id"]
        for d in db[collection].find(
            {"legacy.source": {"$in": list({k[0] for k in keys})}, "legacy.table": table},
            {"legacy.source": 1, "legacy.table": 1, "legacy.id": 1},
        )
    }
    ids: list[ObjectId | None] = []
    ops = []
    for key, doc in zip(keys, docs, strict=True):
        if key in existing:
            stats.existing += 1
            ids.append(existing[key])
            continue
        new_id = ObjectId()
        ids.append(new_id)
        stats.inserted += 1
        body = dict(doc, _id=new_id)
        if unique_best:
            body["is_best"] = False  # switched on below, one per experiment
        ops.append(
            UpdateOne(
                {"legacy.source": key[0], "legacy.table": key[1], "legacy.id": key[2]},
                {"$setOnInsert": body},
                upsert=True,
            )
        )
    if ops and not dry_run:
        db[collection].bulk_write(ops, ordered=True)
        if unique_best:
            for new_id, doc in zip(ids, docs, strict=True):
                if doc.get("is_best"):
                    db[collection].update_many(
                        {
                            "experiment_id": doc["experiment_id"],
                            "is_best": True,
                            "_id": {"$ne": new_id},
                        },
                        {"$set": {"is_best": False}},
                    )
                    db[collection].update_one({"_id": new_id}, {"$set": {"is_best": True}})
    return ids


def _migrate_subjects(db, rows, legacy, report: MigrationReport, dry_run: bool) -> None:
    from services.ids import normalize_subject_id

    stats = report.tables.setdefault("subjects", TableReport("subjects", SUBJECTS))
    stats.rows = len(rows)
    for row in rows:
        try:
            subject_id = normalize_subject_id(row["subject_id"])
        except (ValueError, TypeError):
            stats.skipped += 1
            report.notes.append(f"subjects row {row['subject_id']!r}: not a subject id, skipped")
            continue
        key = legacy("subjects", row["subject_id"], row)
        if db[SUBJECTS].find_one(
            {"legacy.source": key["source"], "legacy.table": "subjects", "legacy.id": key["id"]},
            {"_id": 1},
        ):
            stats.existing += 1
            continue
        stats.inserted += 1
        if dry_run:
            continue
        sets = {"legacy": key}
        values = {
            "age": row.get("age"),
            "sex": row.get("sex"),
            "scores.p_factor": row.get("p_factor"),
            "sessions_count": row.get("n_sessions"),
            "trials_count": row.get("n_trials"),
            "quality.legacy_data_quality": row.get("data_quality"),
        }
        on_insert = {"created_at": utcnow(), "updated_at": utcnow()}
        for name, value in values.items():
            if value is not None:
                # Values from a participants.tsv sync win over the old file's.
                on_insert[name] = _plain(value)
        update: dict[str, Any] = {"$set": sets, "$setOnInsert": on_insert}
        add = {}
        if row.get("release"):
            add["releases"] = row["release"]
        if row.get("notes"):
            add["annotations"] = {"text": row["notes"], "author": "sqlite migration", "at": None}
        if add:
            update["$addToSet"] = add
        if "annotations" not in add:
            on_insert["annotations"] = []
        db[SUBJECTS].update_one({"subject_id": subject_id}, update, upsert=True)


def _migrate_cache_files(db, rows, legacy, clock, report: MigrationReport, dry_run: bool) -> None:
    stats = report.tables.setdefault("cache_files", TableReport("cache_files", DATASETS))
    stats.rows = len(rows)
    docs = []
    for row in rows:
        file_path = row.get("file_path") or ""
        checksum = row.get("checksum")
        local = Path(file_path) if file_path else None
        sha = checksum.lower() if isinstance(checksum, str) and _HEX64.match(checksum) else None
        if local is not None and local.is_file():
            actual = sha256_file(local)
            status = (
                "verified" if sha == actual else f"recomputed: stored checksum {checksum!r} differs"
            )
            sha = actual
        else:
            status = "unverifiable: file not found on this machine"
        docs.append(
            {
                "path": file_path,
                "challenge": row.get("challenge"),
                "release": row.get("release"),
                "size_bytes": int(round(row["file_size_mb"] * MB))
                if row.get("file_size_mb") is not None
                else None,
                "windows": row.get("n_windows"),
                "channels": row.get("n_channels"),
                "samples": row.get("n_times"),
                "registered_at": clock(row.get("created_at")),
                "sha256": sha,
                "checksum": {"value": checksum, "status": status},
                "locations": [{"host": None, "path": file_path}],
                "legacy": legacy("cache_files", row["cache_id"], row),
            }
        )
    seen: set[str] = set()
    unique = []
    for doc in docs:
        if doc["sha256"] is not None and doc["sha256"] in seen:
            stats.skipped += 1
            report.notes.append(
                f"cache_files {doc['legacy']['id']}: same content as an earlier row, skipped"
            )
            continue
        seen.add(doc["sha256"] or "")
        unique.append(doc)
    if unique:
        _upsert(db, DATASETS, "cache_files", unique, report, dry_run)
        stats.rows = len(rows)


def _record_migration(db, path: Path, source: str, tables, views, report: MigrationReport) -> None:
    now = utcnow()
    db[MIGRATIONS].update_one(
        {"source.sha256": source},
        {
            "$set": {
                "source.path": str(path),
                "source.size_bytes": path.stat().st_size,
                "last_run_at": now,
                "timezone_assumed": report.timezone,
                "config": {
                    str(r["key"]): {
                        "value": _plain(r.get("value")),
                        "description": r.get("description"),
                    }
                    for r in tables["config"]
                },
                "counts": {
                    t.table: {
                        "target": t.target,
                        "rows": t.rows,
                        "inserted": t.inserted,
                        "existing": t.existing,
                        "skipped": t.skipped,
                    }
                    for t in report.tables.values()
                },
                "views": {
                    name: [{k: _plain(v) for k, v in row.items()} for row in rows]
                    for name, rows in views.items()
                },
                "notes": report.notes,
            },
            "$setOnInsert": {"first_run_at": now},
        },
        upsert=True,
    )
