"""Data of the workers, the job queue and the sweeps (the Services and Compare pages).

Plain functions over a Redis client and the settings, returning DataFrames and dicts; they only
read (the job list is read without pruning expired index entries, and a sweep's study is
rebuilt from its JSON journal without writing to it).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.heartbeats import list_workers
from jobs.keys import JobKeys
from jobs.queue import JobQueue
from jobs.sweeps import list_sweeps, show_sweep
from services.settings import Settings

WORKER_COLUMNS = [
    "name",
    "state",
    "host",
    "pid",
    "queue",
    "job",
    "attempt",
    "started",
    "last_beat",
    "last_beat_age_s",
]
JOB_COLUMNS = [
    "id",
    "command",
    "state",
    "attempts",
    "max_attempts",
    "worker",
    "queue",
    "submitted_at",
    "started_at",
    "ended_at",
    "experiment",
    "sweep",
    "trial",
    "reason",
]
TRIAL_COLUMNS = ["number", "state", "value", "epochs_reported", "experiment_id", "retry_of"]


def workers_frame(redis, settings: Settings) -> pd.DataFrame:
    """Every worker the heartbeat index knows, live ones first (``eegfs workers``)."""
    workers = list_workers(redis, JobKeys(settings.jobs_prefix))
    return pd.DataFrame([w.to_dict() for w in workers], columns=WORKER_COLUMNS)


def jobs_frame(
    redis, settings: Settings, *, state: str | None = None, limit: int = 50
) -> pd.DataFrame:
    """The newest ``limit`` jobs, newest first, with the experiment of their latest attempt."""
    queue = JobQueue(settings, client=redis)
    records = queue.list(state=state, limit=limit, prune=False)
    rows = []
    for record in records:
        row = record.to_dict()
        latest = max(record.experiments) if record.experiments else None
        row["experiment"] = record.experiments.get(latest) if latest is not None else None
        rows.append(row)
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def job_state_counts(jobs: pd.DataFrame) -> dict[str, int]:
    """How many of ``jobs`` are in each state."""
    return {str(k): int(v) for k, v in jobs["state"].value_counts().items()}


def sweep_names(redis, settings: Settings) -> list[str]:
    """The sweeps created on this Redis, oldest first (``eegfs sweep list``)."""
    return list_sweeps(settings, client=redis)


def sweep_summary(redis, settings: Settings, name: str) -> dict[str, Any]:
    """A sweep's configuration, state counts, best trial and a trials table (one row per
    trial, one column per hyperparameter)."""
    shown = show_sweep(settings, name, client=redis)
    rows = [
        {
            **{c: t.get(c) for c in TRIAL_COLUMNS},
            **{f"param:{k}": v for k, v in t["params"].items()},
        }
        for t in shown["trials"]
    ]
    trials = pd.DataFrame(rows)
    if trials.empty:
        trials = pd.DataFrame(columns=TRIAL_COLUMNS)
    return {
        "name": name,
        "metric": shown["metric"],
        "counts": shown["counts"],
        "best": shown["best"],
        "config": shown["config"],
        "trials": trials,
    }


__all__ = [
    "job_state_counts",
    "jobs_frame",
    "sweep_names",
    "sweep_summary",
    "workers_frame",
]
