"""``eegfs runs sync``: replay spool files left by trackers that could not reach MongoDB."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pymongo

from services.connections import mongo_client
from services.settings import Settings
from tracking.errors import TrackingUnavailableError, mongo_unavailable
from tracking.ops import ApplyError, OpApplier, is_transient
from tracking.schema import ensure_indexes
from tracking.spool import SPOOL_GLOB, default_spool_dir, encode, locked, read_records

log = logging.getLogger(__name__)

#: Spooled records applied per group.
BATCH = 500


@dataclass
class SyncReport:
    """What :func:`sync_spool` did."""

    spool_dir: Path
    replayed_files: list[Path] = field(default_factory=list)
    applied: int = 0
    rejected: int = 0
    busy_files: list[Path] = field(default_factory=list)  # held by a live tracker


def sync_spool(
    settings: Settings, spool_dir: Path | None = None, *, progress: bool = False
) -> SyncReport:
    """Replay every spool file not held by a live tracker, in order, then delete it.

    Each record goes to the database it was written for. Replaying is idempotent, so a file
    replayed partly before (or by its own tracker) is safe to replay again.

    Raises
    ------
    TrackingUnavailableError
        When MongoDB does not answer (files are kept).
    """
    spool_dir = Path(spool_dir) if spool_dir is not None else default_spool_dir(settings.data_dir)
    report = SyncReport(spool_dir)
    files = (
        sorted(spool_dir.glob(SPOOL_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
        if spool_dir.is_dir()
        else []
    )
    if not files:
        return report
    client = mongo_client(settings.mongo_uri, timeout_ms=int(settings.mongo_timeout_s * 1000))
    try:
        try:
            with pymongo.timeout(settings.mongo_timeout_s):
                client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            raise mongo_unavailable(
                exc,
                settings.mongo_uri,
                "replay the spool",
                then=f"{len(files)} spool file(s) kept in {spool_dir}; run `eegfs runs sync` again",
            ) from exc
        applier = OpApplier(client)
        indexed: set[str] = set()
        iterator = files
        if progress:
            from tqdm import tqdm

            iterator = tqdm(files, desc="replaying spool files", unit="file")
        for path in iterator:
            with locked(path) as mine:
                if not mine:
                    report.busy_files.append(path)
                    continue
                batch: list[dict] = []
                for record in read_records(path):
                    if record["db"] not in indexed:
                        ensure_indexes(applier.database(record["db"]))
                        indexed.add(record["db"])
                    batch.append(record)
                    if len(batch) >= BATCH:
                        _replay(applier, batch, path, report)
                        batch = []
                _replay(applier, batch, path, report)
                path.unlink()
                report.replayed_files.append(path)
    finally:
        client.close()
    return report


def _replay(applier: OpApplier, ops: list[dict], path: Path, report: SyncReport) -> None:
    """Apply ``ops`` in groups; set aside the ones MongoDB rejects, stop on a lost connection."""
    start = 0
    while start < len(ops):
        try:
            applier.apply_many(ops[start:])
            report.applied += len(ops) - start
            return
        except ApplyError as exc:
            failed = start + exc.index
            report.applied += exc.index
            cause = exc.cause
            if not is_transient(cause):
                try:
                    applier.apply(ops[failed])
                    report.applied += 1
                    cause = None
                except Exception as single:  # noqa: BLE001 - sorted below
                    cause = single
            if cause is not None and is_transient(cause):
                raise TrackingUnavailableError(
                    f"MongoDB stopped answering while replaying {path} ({type(cause).__name__}); "
                    "the file is kept, run the sync again"
                ) from cause
            if cause is not None:
                report.rejected += 1
                _record_rejected(path, ops[failed], cause)
            start = failed + 1


def _record_rejected(path: Path, record: dict, exc: BaseException) -> None:
    log.error("MongoDB rejected a spooled %s op from %s: %s", record.get("op"), path.name, exc)
    rejected = path.with_name(path.name.replace("spool-", "rejected-", 1))
    with open(rejected, "a", encoding="utf-8") as fh:
        fh.write(encode({"error": f"{type(exc).__name__}: {exc}", "record": record}) + "\n")
