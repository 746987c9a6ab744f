"""Experiments of queued jobs: find them, and end the runs of an attempt whose worker is gone.

A run started by a job records ``job: {id, attempt, worker}`` (see :mod:`tracking.hooks`). When
a worker dies mid-job its run would stay ``running`` forever; the job supervisor calls
:func:`end_attempt_runs` to mark it ``failed`` ("worker lost") or ``stopped`` ("canceled").
"""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from tracking.schema import EXPERIMENTS
from tracking.status import FINAL_STATUSES, RUNNING
from tracking.timeutil import utcnow


def end_attempt_runs(
    db: Database, job_id: str, attempt: int, *, status: str, reason: str
) -> list[str]:
    """Mark the still-running experiments of one job attempt ``status`` with ``reason``.

    Only documents whose stored status is ``running`` change, so a completed run is never
    overwritten and calling this twice changes nothing more. Returns the ids that changed.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
    where = {"job.id": job_id, "job.attempt": int(attempt), "status": RUNNING}
    ids = [doc["_id"] for doc in db[EXPERIMENTS].find(where, {"_id": 1})]
    if not ids:
        return []
    now = utcnow()
    db[EXPERIMENTS].update_many(
        {**where, "_id": {"$in": ids}},
        {"$set": {"status": status, "ended_at": now, "error": reason}},
    )
    return [str(i) for i in ids]


def job_runs(db: Database, job_id: str) -> list[dict[str, Any]]:
    """Every experiment of job ``job_id`` (id, attempt, status, error), oldest attempt first."""
    cursor = (
        db[EXPERIMENTS]
        .find(
            {"job.id": job_id},
            {"_id": 1, "name": 1, "status": 1, "error": 1, "job": 1, "summary": 1},
        )
        .sort([("job.attempt", 1), ("started_at", 1)])
    )
    return [
        {
            "experiment_id": str(doc["_id"]),
            "name": doc.get("name"),
            "attempt": (doc.get("job") or {}).get("attempt"),
            "status": doc.get("status"),
            "error": doc.get("error"),
            "summary": doc.get("summary") or {},
        }
        for doc in cursor
    ]


__all__ = ["end_attempt_runs", "job_runs"]
