"""``eegfs worker``: an RQ worker with heartbeats, lost-worker recovery and an attempt fence.

RQ's worker is extended through its overridable methods, not rewritten:

* :meth:`FencedWorker.execute_job` begins a fenced attempt (:meth:`jobs.fence.Fence.begin`)
  before RQ forks its work horse, and skips a job that is no longer queued (a duplicate
  delivery after a handoff);
* :meth:`FencedWorker.main_work_horse` makes the horse die with the worker
  (``PR_SET_PDEATHSIG``): RQ's horse calls ``setpgrp``, so without it a killed worker would
  leave its job running;
* :meth:`FencedWorker.handle_job_success` / :meth:`FencedWorker.handle_job_failure` record the
  outcome only while the attempt is still the job's current one; a worker that was frozen while
  its job was handed on changes nothing when it wakes up;
* :meth:`FencedWorker.fork_work_horse` never forks while the heartbeat thread is inside a tick
  (both hold :attr:`FencedWorker.fork_lock`);
* a heartbeat thread beats ``BEATS_PER_INTERVAL`` times per interval, runs the lost-worker sweep
  (:class:`jobs.recovery.Recovery`) and kills this worker's horse when its attempt was handed on.

The worker's main process stays small (no torch): each job runs in the horse, and ``train`` /
``features build`` jobs in a fresh ``eegfs`` process below it (see :mod:`jobs.tasks`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis

from jobs import process, rq_adapter, tasks
from jobs.fence import Attempt, Fence
from jobs.heartbeats import BEATS_PER_INTERVAL, Heartbeat
from jobs.keys import JobKeys
from jobs.queue import DEFAULT_QUEUE, DEFAULT_RETENTION_S
from jobs.recovery import Recovery
from services.connections import mask_uri, redis_client
from services.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between reconnection attempts while Redis does not answer.
RECONNECT_WAIT_S = 1.0


class FencedWorker(rq_adapter.Worker):
    """An RQ worker whose jobs are fenced by attempt number (see the module docstring)."""

    # Reconnect quickly after a Redis restart (RQ backs off up to 60 s by default).
    max_connection_wait_time = 2.0

    def __init__(self, *args, settings: Settings, heartbeat: Heartbeat, fence: Fence, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.beat = heartbeat
        self.fence = fence
        self.attempt: Attempt | None = None
        self.jobs_done = 0
        # Held by the heartbeat thread through each tick and by this thread while it forks a
        # work horse. fork() copies every lock another thread holds at that moment, and nothing
        # in the horse ever releases them: a tick imports modules lazily (Optuna, to fail a lost
        # worker's trial), logs and talks to MongoDB, so a horse forked mid-tick could block
        # forever on the first import or lock it shares with the tick (seen once: a sweep trial
        # forked while the tick imported jobs.sweeps never started).
        self.fork_lock = threading.Lock()

    # --- main process ---------------------------------------------------------------------------
    def execute_job(self, job, queue) -> None:
        attempt = self.fence.begin(job.id, self.name)
        if attempt is None:
            log.info("job %s is not queued any more (a duplicate delivery); skipped", job.id)
            rq_adapter.drop_dequeued(queue, job.id)
            return
        self.attempt = attempt
        # The heartbeat thread publishes the current job on its next beat (within 1/3 interval).
        self.beat.job, self.beat.attempt = job.id, attempt.number
        try:
            super().execute_job(job, queue)
        finally:
            self.attempt = None
            self.beat.job, self.beat.attempt = "", 0
            self.jobs_done += 1

    def fork_work_horse(self, job, queue) -> None:
        # In the horse, RQ's method never returns (it ends in os._exit); see ``fork_lock``.
        with self.fork_lock:
            super().fork_work_horse(job, queue)

    def maintain_heartbeats(self, job) -> None:
        # RQ's own heartbeats while a horse runs; a Redis restart must not end the worker.
        try:
            super().maintain_heartbeats(job)
        except redis.ConnectionError as exc:
            log.warning("Redis did not answer RQ's heartbeat (%s); the job goes on", exc)

    def kill_current_horse(self, why: str) -> None:
        """Kill the horse (and the job process below it) of the current attempt."""
        pid = self.horse_pid
        if pid:
            log.warning("killing work horse %d: %s", pid, why)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    # --- work horse -----------------------------------------------------------------------------
    def main_work_horse(self, job, queue) -> None:
        process.die_with_parent()
        tasks.set_current(self.settings, self.attempt)
        super().main_work_horse(job, queue)

    # --- both (fenced outcomes) -------------------------------------------------------------------
    def handle_job_success(self, job, queue, started_job_registry) -> None:
        attempt = self.attempt
        result = tasks.result_json(job)
        if attempt is not None and not _patiently(
            lambda: self.fence.finish(attempt, "finished", result=result)
        ):
            log.warning(
                "job %s attempt %d was handed on to another worker; its success is not recorded",
                job.id,
                attempt.number,
            )
            return
        super().handle_job_success(job, queue, started_job_registry)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="") -> None:
        attempt = self.attempt
        if attempt is None or attempt.job_id != job.id:
            # Not a job this worker runs: RQ's maintenance found it stuck after a dequeue by a
            # worker that died at once. It was never started: put it back in the queue.
            log.warning("job %s was stuck between dequeue and start; queued again", job.id)
            rq_adapter.requeue(self.connection, job.id)
            return
        canceled = rq_adapter.stop_requested_for(self, job.id)
        outcome = "canceled" if canceled else "failed"
        reason = (
            "canceled by request"
            if canceled
            else (tasks.failure_reason() or _last_line(exc_string))[-4000:]
        )
        if not _patiently(lambda: self.fence.finish(attempt, outcome, reason=reason)):
            log.warning(
                "job %s attempt %d was handed on to another worker; its failure is not recorded",
                job.id,
                attempt.number,
            )
            return
        tasks.attempt_ended(self.settings, self.connection, attempt, outcome, reason)
        super().handle_job_failure(job, queue, started_job_registry, exc_string)


def _patiently(call, patience_s: float = 60.0):
    """``call()``, retried while Redis does not answer (a restart) for up to ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("Redis did not answer (%s); retrying", exc)
            time.sleep(RECONNECT_WAIT_S)


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:2000] if lines else "the job failed"


@dataclass
class _Ticker:
    """The heartbeat thread: beat, sweep for lost workers, watch this worker's own fence."""

    worker: FencedWorker
    recovery: Recovery
    interval_s: float
    stop: threading.Event
    orphans: set = field(default_factory=set)

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        with self.worker.fork_lock:  # no horse is forked in the middle of a tick
            self._tick()

    def _tick(self) -> None:
        try:
            self.worker.beat.beat()
            self.check_own_attempt()
            self.recovery.sweep()
        except redis.RedisError as exc:
            self.recovery.connection_lost()
            log.warning("Redis did not answer the heartbeat (%s); retrying", exc)
        except Exception:  # noqa: BLE001 - the heartbeat must outlive any bug in a sweep
            log.exception("heartbeat tick failed")

    def check_own_attempt(self) -> None:
        """Kill the horse of an attempt that was handed on; hand on attempts of this worker that
        ended without recording their outcome (Redis was away at that moment)."""
        worker, fence = self.worker, self.worker.fence
        attempt = worker.attempt
        if attempt is not None and not fence.is_current(attempt):
            worker.kill_current_horse(
                f"job {attempt.job_id} attempt {attempt.number} was handed on to another worker "
                "while this one was not beating"
            )
        mine = {a for a in fence.running().values() if a.worker == worker.name}
        orphans = {a for a in mine if a != worker.attempt}
        # Seen on two ticks in a row: not an attempt that is being started right now.
        for orphan in orphans & self.orphans:
            fence.hand_on(orphan, "the attempt ended without recording its outcome")
        self.orphans = orphans


def persistence_warning(client: redis.Redis, url: str) -> str | None:
    """A warning when Redis at ``url`` would lose queued jobs in a restart, else None."""
    try:
        info = client.info("persistence")
    except redis.ResponseError:  # INFO not allowed for this ACL user
        return None
    if int(info.get("aof_enabled", 0)):
        return None
    return (
        f"Redis at {mask_uri(url)} runs without append-only persistence (appendonly no): a "
        "restart of that server loses queued jobs. Start it with --appendonly yes "
        "(docker-compose.yml and `eegfs services up` do)"
    )


def worker_name() -> str:
    """``host.pid.xxxx``: unique, and says where the worker runs."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"


def run_worker(
    settings: Settings,
    *,
    queue: str = DEFAULT_QUEUE,
    burst: bool = False,
    max_jobs: int | None = None,
    name: str | None = None,
    echo=print,
) -> int:
    """Run jobs from ``queue`` one at a time until stopped; returns the number of jobs run.

    Parameters
    ----------
    settings : Settings
        Redis, MongoDB, data directory, key prefix and heartbeat interval (``heartbeat_s``).
    burst : bool
        Stop when the queue is empty.
    max_jobs : int, optional
        Stop after this many jobs.
    name : str, optional
        Worker name (default ``host.pid.xxxx``).

    The worker reconnects by itself when Redis goes away and comes back; a Redis that does not
    answer (or refuses the password) when the worker starts is an error (redis-py's, raised).
    """
    if max_jobs is not None and max_jobs < 1:
        raise ValueError(f"--max-jobs must be >= 1, got {max_jobs}")
    tasks.preload()
    name = name or worker_name()
    client = redis_client(settings.redis_url)
    beat_client = redis_client(settings.redis_url)
    keys = JobKeys(settings.jobs_prefix)
    heartbeat = Heartbeat(
        beat_client, keys, name=name, queue=queue, heartbeat_s=settings.heartbeat_s
    )
    client.ping()  # fail fast: a server that is down or refuses the password at start is an error
    warning = persistence_warning(client, settings.redis_url)
    if warning:
        log.warning("%s", warning)
        echo(f"warning: {warning}")
    worker = FencedWorker(
        [rq_adapter.make_queue(client, queue)],
        name=name,
        connection=client,
        serializer=rq_adapter.SERIALIZER,
        maintenance_interval=60,
        settings=settings,
        heartbeat=heartbeat,
        fence=Fence(client, keys, retention_s=DEFAULT_RETENTION_S),
    )
    stop = threading.Event()
    ticker = _Ticker(
        worker,
        Recovery(settings, beat_client, Fence(beat_client, keys, retention_s=DEFAULT_RETENTION_S)),
        settings.heartbeat_s / BEATS_PER_INTERVAL,
        stop,
    )
    heartbeat.beat()
    thread = threading.Thread(target=ticker.run, name="eegfs-heartbeat", daemon=True)
    thread.start()
    echo(
        f"worker {name} on queue {queue!r} (Redis {mask_uri(settings.redis_url)}, heartbeat "
        f"{settings.heartbeat_s:g} s, key prefix {settings.jobs_prefix!r})"
    )
    try:
        _work_until_done(worker, client, settings.redis_url, burst, max_jobs, echo)
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            heartbeat.stop()
    return worker.jobs_done


def _work_until_done(worker, client, url, burst, max_jobs, echo) -> None:
    while True:
        left = None if max_jobs is None else max_jobs - worker.jobs_done
        if left is not None and left <= 0:
            return
        try:
            worker.work(
                burst=burst,
                max_jobs=left,
                logging_level=logging.getLevelName(log.getEffectiveLevel()),
            )
        except redis.RedisError as exc:
            log.warning("Redis went away (%s)", exc)
        if rq_adapter.stop_requested(worker) or burst:
            return
        # RQ's loop ended on a Redis error: wait for the server and go on with a fresh RQ
        # registration (the name stays, so the heartbeat and the fence stay this worker's).
        time.sleep(RECONNECT_WAIT_S)
        _wait_for_redis(client, url, echo)
        with contextlib.suppress(redis.RedisError):
            worker.register_death()


def _wait_for_redis(client: redis.Redis, url: str, echo) -> None:
    """Wait until Redis answers again after a started worker lost it (a restart).

    A refused password is not waited for: it is raised (the CLI prints it as one line).
    """
    warned = False
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError:
            raise
        except redis.RedisError as exc:
            if not warned:
                echo(f"waiting for Redis at {mask_uri(url)} ({exc})")
                warned = True
            time.sleep(RECONNECT_WAIT_S)


__all__ = ["FencedWorker", "persistence_warning", "run_worker", "worker_name"]
