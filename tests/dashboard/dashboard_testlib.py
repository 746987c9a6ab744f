"""Synthetic tracking documents for the dashboard tests, shaped as ``tracking`` writes them.

Inserted with pymongo directly (10,000 runs in seconds); each run's fields follow from its
index, so a test knows which runs a filter must return without asking the server.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bson import ObjectId

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
#: pymongo options for the clients of the tests that hold 10,000 runs: on a loaded machine the
#: Python MongoDB-wire server can take longer than the default 10 s to sort them (and to answer a
#: heartbeat meanwhile, which would cancel the query in flight).
PATIENT = {"socketTimeoutMS": 300_000, "connectTimeoutMS": 120_000}
STATUSES = ("completed", "completed", "completed", "failed", "stopped")


@dataclass(frozen=True)
class SyntheticRun:
    index: int
    id: ObjectId
    challenge: int
    status: str
    tags: tuple[str, ...]
    started_at: dt.datetime
    nrmse: float | None
    notes: str


def synthetic_run(i: int, now: dt.datetime) -> SyntheticRun:
    """Run ``i``: challenge 1 or 2, a status (every 97th still running, every 89th stale), tags
    (``sweep`` every 10th, ``baseline`` every 7th), a start ``i`` minutes after BASE and a best
    NRMSE of 0.5 + (i % 100) / 200 (none for failed runs)."""
    status = STATUSES[i % len(STATUSES)]
    if i % 97 == 0:
        status = "running"
    elif i % 89 == 0:
        status = "stale"  # stored as running with an old heartbeat
    tags = tuple(t for t, every in (("sweep", 10), ("baseline", 7)) if i % every == 0)
    nrmse = None if status == "failed" else 0.5 + (i % 100) / 200
    return SyntheticRun(
        index=i,
        id=ObjectId.from_datetime(BASE + dt.timedelta(minutes=i)),
        challenge=1 + i % 2,
        status=status,
        tags=tags,
        started_at=BASE + dt.timedelta(minutes=i),
        nrmse=nrmse,
        notes="contains needle" if i % 250 == 0 else f"note {i}",
    )


def experiment_document(run: SyntheticRun, now: dt.datetime) -> dict:
    """The experiment document of ``run`` (as the tracker stores it)."""
    running = run.status in ("running", "stale")
    heartbeat = now if run.status == "running" else run.started_at + dt.timedelta(minutes=5)
    metrics = (
        {} if run.nrmse is None else {"val_subject_nrmse": run.nrmse, "val_nrmse": run.nrmse + 0.1}
    )
    return {
        "_id": run.id,
        "name": f"run-{run.index:05d}",
        "challenge": run.challenge,
        "model": {"name": "eegnex" if run.index % 3 else "cnn", "architecture": "EEGNeX"},
        "config": {
            "lr": 0.001 * (1 + run.index % 4),
            "batch_size": 32 * (1 + run.index % 2),
            "optimizer": "Adamax" if run.index % 2 else "AdamW",
        },
        "status": "running" if running else run.status,
        "started_at": run.started_at,
        "ended_at": None if running else run.started_at + dt.timedelta(minutes=5),
        "heartbeat": heartbeat,
        "host": f"host{run.index % 4}",
        "tags": list(run.tags),
        "notes": run.notes,
        "last_epoch": 19,
        "last_metrics": {"val_loss": 0.3, **metrics},
        "summary": {} if running else metrics,
        "best_checkpoint": {"epoch": 10, "metrics": metrics} if metrics else None,
    }


def insert_runs(
    db, n: int, now: dt.datetime | None = None, batch: int = 2000
) -> list[SyntheticRun]:
    """Insert ``n`` synthetic runs (and the tracking indexes); returns their descriptions."""
    from tracking.schema import ensure_indexes

    now = now or dt.datetime.now(dt.UTC)
    ensure_indexes(db)
    runs = [synthetic_run(i, now) for i in range(n)]
    for start in range(0, n, batch):
        db.experiments.insert_many(
            [experiment_document(r, now) for r in runs[start : start + batch]], ordered=False
        )
    return runs


def insert_history(db, run_id: ObjectId, *, epochs: int, steps: int, bucket: int = 1000) -> None:
    """``epochs`` epoch documents and ``steps`` step points in buckets of ``bucket``."""
    start = BASE
    if epochs:
        db.epochs.insert_many(
            [
                {
                    "experiment_id": run_id,
                    "epoch": e,
                    "logged_at": start + dt.timedelta(seconds=e),
                    "metrics": {
                        "train_loss": 1.0 / (e + 1),
                        "val_loss": 1.1 / (e + 1),
                        "val_nrmse": 0.9 - e * 1e-4,
                        "val_subject_nrmse": 0.8 - e * 1e-4,
                        "val_subject_mean_predictor_nrmse": 1.0,
                        "lr": 0.002,
                    },
                }
                for e in range(epochs)
            ]
        )
    docs = []
    for first in range(0, steps, bucket):
        points = [
            {
                "step": s,
                "at": start + dt.timedelta(seconds=s),
                "values": {"loss": 1.0 / (s + 1), "lr": 0.002},
            }
            for s in range(first, min(first + bucket, steps))
        ]
        docs.append(
            {
                "experiment_id": run_id,
                "first_step": first,
                "last_step": points[-1]["step"],
                "n": len(points),
                "points": points,
                "batch_ids": [],
            }
        )
    if docs:
        db.metrics.insert_many(docs)
