"""The one module that talks to RQ: queues, jobs and registries, always with JSON serialisation.

Everything RQ-specific that the rest of ``jobs`` needs is a function here, so that an RQ upgrade
is checked in one place (``tests/jobs/test_rq_adapter.py`` pins each behaviour relied on):

* every Queue, Job and Worker is made with :class:`rq.serializers.JSONSerializer`: a job is a
  plain JSON call (function path and a JSON argument), never pickle;
* a started job whose worker is lost is taken out of RQ's started registry and queued again
  (RQ would only notice it after its maintenance interval and then fail it, not requeue it);
* the private attributes read are ``Worker._stopped_job_id`` (which job a stop command was for)
  and ``Worker._stop_requested`` / ``_shutdown_requested_date`` (a warm shutdown was asked for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import redis
from rq import Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer
#: The function every job runs (in the worker's work horse), with one JSON argument: the spec.
JOB_FUNCTION = "jobs.tasks.execute"


def make_queue(connection: redis.Redis, name: str) -> Queue:
    """The RQ queue ``name`` with JSON serialisation."""
    return Queue(name, connection=connection, serializer=SERIALIZER)


def enqueue(
    queue: Queue,
    spec: dict[str, Any],
    *,
    job_id: str,
    description: str,
    retention_s: int,
    pipeline: redis.client.Pipeline | None = None,
) -> Job:
    """Enqueue ``jobs.tasks.execute(spec)`` with no time limit; results kept ``retention_s``."""
    return queue.enqueue_call(
        func=JOB_FUNCTION,
        args=(spec,),
        job_id=job_id,
        description=description,
        timeout=-1,
        result_ttl=retention_s,
        failure_ttl=retention_s,
        pipeline=pipeline,
    )


def fetch(connection: redis.Redis, job_id: str) -> Job | None:
    """The RQ job ``job_id``, or None when RQ no longer has it."""
    try:
        return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return None


def statuses(connection: redis.Redis, job_ids: Iterable[str]) -> dict[str, str | None]:
    """RQ's status of each job (None for a job RQ no longer has)."""
    ids = list(job_ids)
    jobs = Job.fetch_many(ids, connection=connection, serializer=SERIALIZER) if ids else []
    return {
        job_id: (None if job is None else str(job.get_status(refresh=False).value))
        for job_id, job in zip(ids, jobs, strict=True)
    }


def return_value(job: Job) -> Any:
    """The JSON value a finished job returned (None when there is none)."""
    return job.return_value()


def _remove_everywhere(connection: redis.Redis, job: Job, pipe) -> None:
    StartedJobRegistry(job.origin, connection, serializer=SERIALIZER).remove_executions(
        job, pipeline=pipe
    )
    for registry in (FailedJobRegistry, CanceledJobRegistry, FinishedJobRegistry):
        pipe.zrem(registry(job.origin, connection, serializer=SERIALIZER).key, job.id)


def requeue(connection: redis.Redis, job_id: str) -> bool:
    """Put a started, failed or canceled job back at the end of its queue.

    Returns False when RQ no longer has the job.
    """
    job = fetch(connection, job_id)
    if job is None:
        return False
    with connection.pipeline() as pipe:
        _remove_everywhere(connection, job, pipe)
        pipe.execute()
    job.started_at = None
    job.ended_at = None
    make_queue(connection, job.origin).enqueue_job(job)
    return True


def end_started(connection: redis.Redis, job_id: str, status: str, reason: str, ttl: int) -> bool:
    """Record a started job whose worker is lost as ``finished`` or ``failed`` in RQ."""
    job = fetch(connection, job_id)
    if job is None:
        return False
    with connection.pipeline() as pipe:
        _remove_everywhere(connection, job, pipe)
        if status == "finished":
            job.set_status(JobStatus.FINISHED, pipeline=pipe)
            FinishedJobRegistry(job.origin, connection, serializer=SERIALIZER).add(
                job, ttl, pipeline=pipe
            )
        else:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            FailedJobRegistry(job.origin, connection, serializer=SERIALIZER).add(
                job, ttl, exc_string=reason, pipeline=pipe
            )
        pipe.execute()
    return True


def cancel(connection: redis.Redis, job_id: str) -> None:
    """Take a queued job out of its queue (RQ status ``canceled``)."""
    job = fetch(connection, job_id)
    if job is None:
        return
    with contextlib.suppress(InvalidJobOperation):  # already canceled
        job.cancel()


def stop(connection: redis.Redis, job_id: str) -> None:
    """Ask the worker running ``job_id`` to kill its work horse (the job ends ``canceled``)."""
    send_stop_job_command(connection, job_id, serializer=SERIALIZER)


def drop_dequeued(queue: Queue, job_id: str) -> None:
    """Forget a job that a worker took off the queue but will not run (already handled)."""
    queue.intermediate_queue.remove(job_id)


def stop_requested(worker: Worker) -> bool:
    """True when ``worker`` was asked to stop (SIGINT/SIGTERM: a warm shutdown)."""
    return bool(getattr(worker, "_stop_requested", False)) or (
        getattr(worker, "_shutdown_requested_date", None) is not None
    )


def stop_requested_for(worker: Worker, job_id: str) -> bool:
    """True when ``worker`` killed its horse because a stop command named ``job_id``."""
    return getattr(worker, "_stopped_job_id", None) == job_id


__all__ = [
    "JOB_FUNCTION",
    "SERIALIZER",
    "Job",
    "Queue",
    "Worker",
    "cancel",
    "drop_dequeued",
    "end_started",
    "enqueue",
    "fetch",
    "make_queue",
    "requeue",
    "return_value",
    "statuses",
    "stop",
    "stop_requested",
    "stop_requested_for",
]
