"""Submit, list, show, cancel and retry jobs (the library behind ``eegfs jobs ...``).

A job is a plain JSON spec, ``{"command": ..., "args": [...]}``: ``train`` and
``features build`` run the ``eegfs`` command of that name with the arguments in a fresh process
on a worker; ``noop`` and ``spin`` are built-in probes (a worker pool check and a CPU-bound
unit of work for benchmarks); ``trial`` runs one trial of a sweep (see :mod:`jobs.sweeps`).

The job's state lives in its own hash (see :mod:`jobs.fence`), written together with RQ's job
in one MULTI/EXEC transaction, so a worker never sees an RQ job without its state.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from jobs import rq_adapter
from jobs.errors import JobNotFoundError, JobStateError
from jobs.fence import QUEUED, STARTED, TERMINAL, Fence, utcnow_text
from jobs.keys import JobKeys
from services.connections import redis_client
from services.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
#: Seconds a job's record (and RQ's result) is kept after it has ended: 7 days.
DEFAULT_RETENTION_S = 7 * 24 * 3600
#: ``eegfs`` commands a job may run, by the words that name them.
CLI_COMMANDS = {"train": ("train",), "features build": ("features", "build")}
BUILTIN_COMMANDS = ("noop", "spin")
COMMANDS = (*CLI_COMMANDS, *BUILTIN_COMMANDS, "trial")


@dataclass
class JobRecord:
    """What ``eegfs jobs show`` prints about one job."""

    id: str
    command: str
    args: list[str]
    queue: str
    state: str
    attempts: int
    max_attempts: int
    worker: str | None
    submitted_at: str | None
    started_at: str | None
    ended_at: str | None
    reason: str | None
    sweep: str | None = None
    trial: int | None = None
    experiments: dict[int, str] = field(default_factory=dict)
    rq_status: str | None = None
    result: Any = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["experiments"] = {str(k): v for k, v in self.experiments.items()}
        return out


def record_from_hash(job_id: str, fields: dict[bytes, bytes]) -> JobRecord:
    """A :class:`JobRecord` from the job hash's raw fields."""
    f = {k.decode(): v.decode() for k, v in fields.items()}
    experiments = {int(k.split(".", 1)[1]): v for k, v in f.items() if k.startswith("run.") and v}
    attempt, base = int(f.get("attempt", "0")), int(f.get("base", "0"))
    return JobRecord(
        id=job_id,
        command=f.get("command", ""),
        args=json.loads(f.get("args", "[]")),
        queue=f.get("queue", DEFAULT_QUEUE),
        state=f.get("state", ""),
        attempts=attempt,
        max_attempts=int(f.get("max_attempts", "0")) + base,
        worker=f.get("worker") or None,
        submitted_at=f.get("submitted_at") or None,
        started_at=f.get("started_at") or None,
        ended_at=f.get("ended_at") or None,
        reason=f.get("reason") or None,
        sweep=f.get("sweep") or None,
        trial=int(f["trial"]) if f.get("trial") else None,
        experiments=experiments,
        result=json.loads(f["result"]) if f.get("result") else None,
    )


class JobQueue:
    """The job queue on one Redis (``settings.redis_url``), keys under ``settings.jobs_prefix``.

    Parameters
    ----------
    settings : Settings
        Redis address and key prefix.
    client : redis.Redis, optional
        A client to use instead of one made from ``settings.redis_url``.
    retention_s : int
        Seconds an ended job's record and result are kept.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis | None = None,
        retention_s: int = DEFAULT_RETENTION_S,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else redis_client(settings.redis_url)
        self.keys = JobKeys(settings.jobs_prefix)
        self.retention_s = int(retention_s)
        self.fence = Fence(self.client, self.keys, retention_s=self.retention_s)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- submit -------------------------------------------------------------------------------
    def submit(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        sweep: str | None = None,
    ) -> str:
        """Queue one job; returns its id. See :meth:`submit_many`."""
        return self.submit_many(
            [(command, list(args))], queue=queue, max_attempts=max_attempts, sweep=sweep
        )[0]

    def submit_many(
        self,
        jobs: Iterable[tuple[str, Sequence[str]]],
        *,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        sweep: str | None = None,
    ) -> list[str]:
        """Queue ``(command, args)`` jobs in one transaction; returns their ids in order.

        Raises
        ------
        ValueError
            An unknown command, arguments that are not strings, or ``max_attempts < 1``.
        """
        specs = [_spec(command, args, sweep) for command, args in jobs]
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"--max-attempts must be a whole number >= 1, got {max_attempts!r}")
        rq_queue = rq_adapter.make_queue(self.client, queue)
        ids = [uuid.uuid4().hex for _ in specs]
        now = utcnow_text()
        with self.client.pipeline(transaction=True) as pipe:
            pipe.multi()  # RQ's enqueue expects a pipeline already in MULTI mode
            for job_id, spec in zip(ids, specs, strict=True):
                pipe.hset(
                    self.keys.job(job_id),
                    mapping={
                        "command": spec["command"],
                        "args": json.dumps(spec["args"]),
                        "queue": queue,
                        "max_attempts": max_attempts,
                        "attempt": 0,
                        "base": 0,
                        "state": QUEUED,
                        "submitted_at": now,
                        "worker": "",
                        "reason": "",
                        "sweep": sweep or "",
                    },
                )
                pipe.zadd(self.keys.jobs, {job_id: _unix(now)})
                rq_adapter.enqueue(
                    rq_queue,
                    spec,
                    job_id=job_id,
                    description=describe(spec),
                    retention_s=self.retention_s,
                    pipeline=pipe,
                )
            pipe.execute()
        wait_until_durable(self.client)
        return ids

    # --- read ---------------------------------------------------------------------------------
    def get(self, job_id: str, *, with_rq: bool = True) -> JobRecord:
        """The job ``job_id``.

        Raises
        ------
        JobNotFoundError
            When no such job is recorded (never submitted, or ended longer ago than the
            retention period).
        """
        fields = self.client.hgetall(self.keys.job(job_id))
        if not fields:
            raise JobNotFoundError(
                f"no job {job_id!r} in Redis {self.keys.prefix}:job:* (it was never submitted, "
                f"or ended more than {self.retention_s // 86400} days ago); list jobs with "
                "`eegfs jobs list`"
            )
        record = record_from_hash(job_id, fields)
        if with_rq:
            job = rq_adapter.fetch(self.client, job_id)
            if job is not None:
                record.rq_status = str(job.get_status(refresh=False).value)
        return record

    def list(
        self, *, state: str | None = None, limit: int = 50, prune: bool = True
    ) -> list[JobRecord]:
        """The newest ``limit`` jobs (optionally only those in ``state``), newest first.

        With ``prune`` (the default) index entries of records past their retention are removed
        on the way; ``prune=False`` only reads (the dashboard writes nothing).
        """
        out: list[JobRecord] = []
        start, page = 0, max(limit, 100)
        while len(out) < limit:
            ids = [
                i.decode() for i in self.client.zrevrange(self.keys.jobs, start, start + page - 1)
            ]
            if not ids:
                break
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self.keys.job(job_id))
                hashes = pipe.execute()
            expired = [job_id for job_id, h in zip(ids, hashes, strict=True) if not h]
            if expired and prune:
                self.client.zrem(self.keys.jobs, *expired)  # records past their retention
            for job_id, fields in zip(ids, hashes, strict=True):
                if fields:
                    record = record_from_hash(job_id, fields)
                    if state is None or record.state == state:
                        out.append(record)
            start += page - (len(expired) if prune else 0)
        return out[:limit]

    # --- change -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> str:
        """Cancel a queued job, or stop a running one; returns what was done.

        Raises
        ------
        JobStateError
            When the job has already ended.
        """
        record = self.get(job_id, with_rq=False)
        if record.state in TERMINAL:
            raise JobStateError(
                f"job {job_id} has already ended ({record.state}); nothing to cancel"
            )
        if self.fence.cancel_queued(job_id):
            rq_adapter.cancel(self.client, job_id)
            return "canceled (it had not started)"
        rq_adapter.stop(self.client, job_id)
        return f"stop sent to worker {record.worker} (attempt {record.attempts})"

    def retry(self, job_id: str) -> None:
        """Queue a failed or canceled job again, with a fresh budget of attempts.

        Raises
        ------
        JobStateError
            When the job is queued, running or finished.
        """
        self.get(job_id, with_rq=False)
        answer = self.fence.retry(job_id)
        if answer != "ok":
            raise JobStateError(
                f"job {job_id} is {answer}: only failed or canceled jobs can be retried"
                + ("; cancel it first" if answer in (QUEUED, STARTED) else "")
            )
        if not rq_adapter.requeue(self.client, job_id):
            # RQ's record expired (it keeps it as long as ours): enqueue the same spec again.
            record = self.get(job_id, with_rq=False)
            rq_adapter.enqueue(
                rq_adapter.make_queue(self.client, record.queue),
                _spec(record.command, record.args, record.sweep),
                job_id=job_id,
                description=describe({"command": record.command, "args": record.args}),
                retention_s=self.retention_s,
            )


def _spec(command: str, args: Sequence[str], sweep: str | None) -> dict[str, Any]:
    if command not in COMMANDS:
        raise ValueError(f"unknown job command {command!r}; expected one of: {', '.join(COMMANDS)}")
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise TypeError(f"job arguments must be a list of strings, got {args!r}")
    if command == "trial" and not sweep:
        raise ValueError("a trial job needs the name of its sweep")
    spec: dict[str, Any] = {"command": command, "args": list(args)}
    if sweep:
        spec["sweep"] = sweep
    return spec


def describe(spec: dict[str, Any]) -> str:
    """One line naming a job's command and arguments (RQ's description)."""
    words = [spec["command"], *spec.get("args", [])]
    if spec.get("sweep"):
        words.append(f"(sweep {spec['sweep']})")
    text = " ".join(words)
    return text if len(text) <= 200 else text[:197] + "..."


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def wait_until_durable(client: redis.Redis, timeout_ms: int = 1500) -> bool:
    """Wait until this client's writes are fsynced to the append-only file (Redis >= 7.2).

    ``WAITAOF`` closes the one-second window of ``appendfsync everysec``. Older servers (and
    servers with persistence off) answer with an error: then nothing is waited for and False is
    returned.
    """
    try:
        local, _replicas = client.execute_command("WAITAOF", 1, 0, timeout_ms)
    except redis.ResponseError:
        return False
    return int(local) >= 1


def absolute_paths(args: Sequence[str]) -> list[str]:
    """``args`` with every argument that names an existing file made absolute.

    Workers may run in another directory (or on another machine with the same shared paths).
    """
    return [os.path.abspath(a) if not a.startswith("-") and os.path.exists(a) else a for a in args]


__all__ = [
    "BUILTIN_COMMANDS",
    "CLI_COMMANDS",
    "COMMANDS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_QUEUE",
    "DEFAULT_RETENTION_S",
    "JobQueue",
    "JobRecord",
    "absolute_paths",
    "describe",
    "record_from_hash",
    "wait_until_durable",
]
