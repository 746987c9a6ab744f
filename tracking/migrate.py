"""``eegfs migrate-sqlite PATH``: move an EEG2025 SQLite run log into MongoDB.

Three steps, three modules: :mod:`tracking.legacy_sqlite` reads the file (read-only),
:mod:`tracking.legacy_mappers` turns each row into a document (pure functions, one per table,
where the column-by-column mapping is documented) and this module checks the files rows name,
writes the documents and reports what it did.

Every migrated document carries ``legacy = {source: <sha256 of the file>, table, id, row}``
with a unique index, so a rerun inserts nothing new. Naive timestamps are read in the timezone
given (default UTC) and the assumption is stored in ``legacy.timezone_assumed`` and in the
``migrations`` document (one per source file: the ``config`` table's rows, the counts, the notes
and the rows the two views return).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database

from services.files import sha256_file
from tracking.legacy_mappers import (
    FileCheck,
    LegacyClock,
    LegacySource,
    best_checkpoint_row,
    index_epochs,
    legacy_bool,
    map_cache_file,
    map_checkpoint,
    map_epoch,
    map_run,
    map_subject,
    plain,
    shared_checkpoint_paths,
    stored_checksum,
)
from tracking.legacy_sqlite import LegacyLog, read_legacy_log
from tracking.schema import (
    CHECKPOINTS,
    DATASETS,
    EPOCHS,
    EXPERIMENTS,
    MIGRATIONS,
    SUBJECTS,
    ensure_indexes,
)
from tracking.status import RUNNING
from tracking.timeutil import utcnow

#: checksum_status / checksum.status of a file the row names but this machine does not have.
FILE_NOT_HERE = "unverifiable: file not found on this machine"
#: checksum_status of a checkpoint whose path several runs wrote (the file is the last one's).
FILE_SHARED = "unverifiable: path shared by several runs' checkpoints (overwritten)"
#: checksum_status of a checkpoint file found here and hashed.
FILE_VERIFIED = "verified: computed from the file during migration"


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

    def table(self, table: str, target: str) -> TableReport:
        """The counts of ``table`` (created on first use)."""
        return self.tables.setdefault(table, TableReport(table, target))


@dataclass
class _Migration:
    """What every step of one migration shares."""

    db: Database
    log: LegacyLog
    source: LegacySource
    clock: LegacyClock
    report: MigrationReport
    dry_run: bool


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
        When the file is not an SQLite database with the EEG2025 tables, or the timezone is
        unknown.
    """
    path = Path(path).resolve()
    log = read_legacy_log(path)
    clock = LegacyClock(timezone)
    source = LegacySource(sha256_file(path), str(path), timezone)
    report = MigrationReport(path, source.sha256, dry_run, timezone)
    report.views = {name: len(rows) for name, rows in log.views.items()}
    m = _Migration(db, log, source, clock, report, dry_run)
    if not dry_run:
        ensure_indexes(db)
    _note_changed_source(m)
    epochs_by_run, merged = index_epochs(log.tables["epoch_history"])
    run_to_experiment = _migrate_runs(m, epochs_by_run)
    _migrate_epochs(m, epochs_by_run, merged, run_to_experiment)
    _migrate_checkpoints(m, run_to_experiment)
    _migrate_subjects(m)
    _migrate_cache_files(m)
    _note_timestamps_and_views(m)
    report.tables["config"] = TableReport("config", MIGRATIONS, rows=len(log.tables["config"]))
    if not dry_run:
        _record_migration(m)
    return report


# --- steps --------------------------------------------------------------------------------------
def _note_changed_source(m: _Migration) -> None:
    path = str(m.report.source)
    previous = m.db[MIGRATIONS].find_one(
        {"source.path": path, "source.sha256": {"$ne": m.source.sha256}}
    )
    if previous is not None:
        m.report.notes.append(
            f"{path} was migrated before with another content hash "
            f"({previous['source']['sha256'][:12]}): its rows count as a new source and are "
            "added again; remove the older copies with `legacy.source` if that is not wanted"
        )


def _migrate_runs(m: _Migration, epochs_by_run: dict[Any, dict[int, Any]]) -> dict[Any, ObjectId]:
    """Insert the experiments; returns legacy run_id -> experiment _id."""
    rows = m.log.tables["training_runs"]
    docs = [map_run(row, epochs_by_run.get(row["run_id"], {}), m.source, m.clock) for row in rows]
    for doc in docs:
        if doc["legacy"].get("config_error"):
            m.report.notes.append(
                f"training_runs {doc['legacy']['id']}: config is "
                f"{doc['legacy']['config_error']}; kept as config.raw"
            )
    derived = sum(bool(doc["legacy"]["derived"]) for doc in docs)
    if derived:
        m.report.notes.append(
            f"{derived} run(s) had NULL best_val_loss/best_epoch/total_epochs although epochs "
            "exist; derived from epoch_history (listed in legacy.derived)"
        )
    running = sum(row.get("status") == RUNNING for row in rows)
    if running:
        m.report.notes.append(
            f"{running} run(s) were left 'running' in the file: stored as 'stale' "
            "(original_status keeps 'running')"
        )
    ids = _upsert(m, EXPERIMENTS, "training_runs", docs)
    return {doc["legacy"]["id"]: new_id for doc, new_id in zip(docs, ids, strict=True)}


def _migrate_epochs(
    m: _Migration,
    epochs_by_run: dict[Any, dict[int, Any]],
    merged: dict[tuple[Any, int], list[Any]],
    run_to_experiment: dict[Any, ObjectId],
) -> None:
    docs, orphans = [], 0
    for run_id, epochs in epochs_by_run.items():
        if run_id not in run_to_experiment:
            orphans += len(epochs)
            continue
        docs += [
            map_epoch(
                row, run_to_experiment[run_id], m.source, m.clock, merged.get((run_id, n), [])
            )
            for n, row in sorted(epochs.items())
        ]
    _upsert(m, EPOCHS, "epoch_history", docs)
    duplicates = sum(map(len, merged.values()))
    stats = m.report.table("epoch_history", EPOCHS)
    stats.rows = len(m.log.tables["epoch_history"])
    stats.skipped = orphans + duplicates
    if duplicates:
        m.report.notes.append(
            f"{duplicates} epoch_history row(s) repeat an epoch of their run; the latest row of "
            "each is kept, the others' ids are in legacy.merged_ids"
        )
    if orphans:
        m.report.notes.append(
            f"{orphans} epoch_history row(s) point at a run_id missing from training_runs: skipped"
        )


def _check_checkpoint_file(file_path: str | None, shared: set[str]) -> FileCheck:
    if not file_path or not Path(file_path).is_file():
        return FileCheck(None, FILE_NOT_HERE)
    if file_path in shared:
        return FileCheck(None, FILE_SHARED)
    return FileCheck(sha256_file(file_path), FILE_VERIFIED, Path(file_path).stat().st_size)


def _migrate_checkpoints(m: _Migration, run_to_experiment: dict[Any, ObjectId]) -> None:
    rows = m.log.tables["model_checkpoints"]
    shared = shared_checkpoint_paths(rows)
    by_run: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_run[row["run_id"]].append(row)
    docs, orphans, several_best = [], 0, 0
    for run_id, run_rows in by_run.items():
        if run_id not in run_to_experiment:
            orphans += len(run_rows)
            continue
        several_best += sum(bool(legacy_bool(r.get("is_best"))) for r in run_rows) > 1
        best = best_checkpoint_row(run_rows)
        docs += [
            map_checkpoint(
                row,
                run_to_experiment[run_id],
                is_best=row is best,
                file=_check_checkpoint_file(row.get("file_path"), shared),
                source=m.source,
                clock=m.clock,
            )
            for row in run_rows
        ]
    _note_checkpoints(m, rows, shared, several_best, docs)
    ids = _upsert(m, CHECKPOINTS, "model_checkpoints", docs, unique_best=True)
    m.report.table("model_checkpoints", CHECKPOINTS).skipped = orphans
    if not m.dry_run:
        _link_best_checkpoints(m, docs, ids)


def _note_checkpoints(
    m: _Migration, rows: list[dict[str, Any]], shared: set[str], several_best: int, docs: list
) -> None:
    if shared:
        n = sum(1 for r in rows if r.get("file_path") in shared)
        m.report.notes.append(
            f"{n} checkpoint row(s) share a file path with another run's checkpoint "
            f"({len(shared)} path(s)): each file was overwritten by a later run"
        )
    if several_best:
        m.report.notes.append(
            f"{several_best} run(s) had several checkpoints marked best; the one with the lowest "
            "val_loss is best now (legacy.is_best_original keeps the stored flag)"
        )
    missing = sum(doc["checksum_status"] == FILE_NOT_HERE for doc in docs)
    if missing:
        m.report.notes.append(
            f"{missing} checkpoint file(s) are not on this machine: checksums unverifiable"
        )


def _link_best_checkpoints(m: _Migration, docs: list[dict], ids: list[ObjectId | None]) -> None:
    """Point each experiment's ``best_checkpoint`` at its best migrated checkpoint.

    ``summary.best_epoch`` is set in the same update (it is derived from the best checkpoint,
    see tracking/best.py); the SQLite row's own value stays in ``legacy.row``.
    """
    for doc, checkpoint_id in zip(docs, ids, strict=True):
        if doc["is_best"]:
            best = {"id": checkpoint_id, "epoch": doc["epoch"], "metrics": doc["metrics"]}
            m.db[EXPERIMENTS].update_one(
                {"_id": doc["experiment_id"]},
                {"$set": {"best_checkpoint": best, "summary.best_epoch": doc["epoch"]}},
            )


def _migrate_subjects(m: _Migration) -> None:
    rows = m.log.tables["subjects"]
    stats = m.report.table("subjects", SUBJECTS)
    stats.rows = len(rows)
    now = utcnow()
    for row in rows:
        try:
            subject_id, update = map_subject(row, m.source, now)
        except (ValueError, TypeError):
            stats.skipped += 1
            m.report.notes.append(f"subjects row {row['subject_id']!r}: not a subject id, skipped")
            continue
        key = {"legacy.source": m.source.sha256, "legacy.table": "subjects"}
        if m.db[SUBJECTS].find_one({**key, "legacy.id": row["subject_id"]}, {"_id": 1}):
            stats.existing += 1
            continue
        stats.inserted += 1
        if not m.dry_run:
            m.db[SUBJECTS].update_one({"subject_id": subject_id}, update, upsert=True)


def _check_cache_file(file_path: str | None, checksum: Any) -> FileCheck:
    stored = stored_checksum(checksum)
    if not file_path or not Path(file_path).is_file():
        return FileCheck(stored, FILE_NOT_HERE)
    actual = sha256_file(file_path)
    if stored == actual:
        return FileCheck(actual, "verified")
    return FileCheck(actual, f"recomputed: stored checksum {checksum!r} differs")


def _migrate_cache_files(m: _Migration) -> None:
    rows = m.log.tables["cache_files"]
    stats = m.report.table("cache_files", DATASETS)
    docs = [
        map_cache_file(
            row,
            file=_check_cache_file(row.get("file_path"), row.get("checksum")),
            source=m.source,
            clock=m.clock,
        )
        for row in rows
    ]
    seen: set[str] = set()
    unique = []
    for doc in docs:
        if doc["sha256"] is not None and doc["sha256"] in seen:
            stats.skipped += 1
            m.report.notes.append(
                f"cache_files {doc['legacy']['id']}: same content as an earlier row, skipped"
            )
            continue
        seen.add(doc["sha256"] or "")
        unique.append(doc)
    if unique:
        _upsert(m, DATASETS, "cache_files", unique)
    stats.rows = len(rows)


def _note_timestamps_and_views(m: _Migration) -> None:
    unparseable = m.clock.unparseable
    if unparseable:
        m.report.notes.append(
            f"{len(unparseable)} timestamp(s) could not be parsed (e.g. {unparseable[0]!r}); "
            "stored as null, the original text is in legacy.row"
        )
    m.report.notes.append(f"naive timestamps were read as {m.source.timezone} and converted to UTC")
    best_view = m.log.views.get("best_models")
    if best_view is None:
        return
    runs = len(m.log.tables["training_runs"])
    with_path = sum(r.get("file_path") is not None for r in best_view)
    flagged = sum(bool(legacy_bool(r.get("is_best"))) for r in m.log.tables["model_checkpoints"])
    if len(best_view) != runs or with_path != flagged:
        m.report.notes.append(
            f"view best_models returns {len(best_view)} rows for {runs} runs, {with_path} with a "
            f"checkpoint path although {flagged} checkpoint(s) are flagged best (its "
            "`is_best = 1` does not match blob booleans); `eegfs runs best` replaces it"
        )


# --- writing ------------------------------------------------------------------------------------
def _upsert(
    m: _Migration,
    collection: str,
    table: str,
    docs: list[dict[str, Any]],
    *,
    unique_best: bool = False,
) -> list[ObjectId | None]:
    """Insert each doc unless its legacy key exists; returns the _id of every doc, in order."""
    stats = m.report.table(table, collection)
    stats.rows = len(docs)
    existing = {
        d["legacy"]["id"]: d["_id"]
        for d in m.db[collection].find(
            {"legacy.source": m.source.sha256, "legacy.table": table},
            {"legacy.id": 1},
        )
    }
    ids: list[ObjectId | None] = []
    ops = []
    for doc in docs:
        row_id = doc["legacy"]["id"]
        if row_id in existing:
            stats.existing += 1
            ids.append(existing[row_id])
            continue
        new_id = ObjectId()
        ids.append(new_id)
        stats.inserted += 1
        # With unique_best, is_best is switched on below, one per experiment.
        body = dict(doc, _id=new_id, is_best=False) if unique_best else dict(doc, _id=new_id)
        key = {"legacy.source": m.source.sha256, "legacy.table": table, "legacy.id": row_id}
        ops.append(UpdateOne(key, {"$setOnInsert": body}, upsert=True))
    if ops and not m.dry_run:
        m.db[collection].bulk_write(ops, ordered=True)
        if unique_best:
            _switch_best(m.db[collection], docs, ids)
    return ids


def _switch_best(collection, docs: list[dict[str, Any]], ids: list[ObjectId | None]) -> None:
    """Mark each doc flagged best as its experiment's only best one (new docs were inserted off)."""
    for new_id, doc in zip(ids, docs, strict=True):
        if doc.get("is_best"):
            collection.update_many(
                {"experiment_id": doc["experiment_id"], "is_best": True, "_id": {"$ne": new_id}},
                {"$set": {"is_best": False}},
            )
            collection.update_one({"_id": new_id}, {"$set": {"is_best": True}})


def _record_migration(m: _Migration) -> None:
    now = utcnow()
    path = m.report.source
    counts = {
        t.table: {
            "target": t.target,
            "rows": t.rows,
            "inserted": t.inserted,
            "existing": t.existing,
            "skipped": t.skipped,
        }
        for t in m.report.tables.values()
    }
    config = {
        str(r["key"]): {"value": plain(r.get("value")), "description": r.get("description")}
        for r in m.log.tables["config"]
    }
    views = {
        name: [{k: plain(v) for k, v in row.items()} for row in rows]
        for name, rows in m.log.views.items()
    }
    m.db[MIGRATIONS].update_one(
        {"source.sha256": m.source.sha256},
        {
            "$set": {
                "source.path": str(path),
                "source.size_bytes": path.stat().st_size,
                "last_run_at": now,
                "timezone_assumed": m.report.timezone,
                "config": config,
                "counts": counts,
                "views": views,
                "notes": m.report.notes,
            },
            "$setOnInsert": {"first_run_at": now},
        },
        upsert=True,
    )


__all__ = ["MigrationReport", "TableReport", "migrate_sqlite"]
