"""Taking jobs back from lost workers: the sweep that every worker runs on its heartbeat tick.

RQ only notices an abandoned job when its started-registry entry expires, checked in a
maintenance pass every 10 minutes, and then fails it instead of requeueing it. Here every worker
looks for lost workers a few times per heartbeat interval: an attempt whose worker's heartbeat
key has expired is handed on atomically (:meth:`jobs.fence.Fence.hand_on`: queued again, or
failed once ``max_attempts`` are used), then the follow-up runs: the job goes back into RQ's
queue (or is recorded failed there), the attempt's experiment is marked ``failed`` with reason
"worker lost", and a sweep trial is failed in its study and its parameters are enqueued again.

The follow-up is re-entrant: a handoff stays in ``P:handoffs`` until its follow-up is done, so a
sweeper that dies half-way (or a MongoDB that does not answer) only delays it to the next sweep.
"""

from __future__ import annotations

import logging
import time

import redis

from jobs import rq_adapter
from jobs.fence import Fence, Handoff
from jobs.heartbeats import forget_old_lost, lost_workers
from jobs.keys import JobKeys
from services.settings import Settings

log = logging.getLogger(__name__)

#: The reason recorded on the experiment of an attempt whose worker was lost.
WORKER_LOST = "worker lost"


class Recovery:
    """Finds lost workers and hands their jobs on; one per worker process.

    Parameters
    ----------
    settings : Settings
        MongoDB (to mark runs failed), Redis and the heartbeat interval.
    client : redis.Redis
        The client to use (the heartbeat thread's own).
    """

    def __init__(self, settings: Settings, client: redis.Redis, fence: Fence) -> None:
        self.settings = settings
        self.client = client
        self.keys = JobKeys(settings.jobs_prefix)
        self.fence = fence
        self.heartbeat_s = settings.heartbeat_s
        self._connected_since: float | None = None

    def connection_lost(self) -> None:
        """Called when Redis did not answer: wait a full interval after it is back.

        After a Redis restart every heartbeat key may have expired; live workers need one
        interval to beat again before any of them can be called lost.
        """
        self._connected_since = None

    def sweep(self) -> list[Handoff]:
        """Hand on the attempts of lost workers, then do every pending follow-up."""
        now = time.monotonic()
        if self._connected_since is None:
            self._connected_since = now
        if now - self._connected_since < self.heartbeat_s:
            return []
        lost = lost_workers(self.client, self.keys)
        known = {n.decode() for n in self.client.zrange(self.keys.workers, 0, -1)}
        for attempt in self.fence.running().values():
            if attempt.worker in lost or attempt.worker not in known:
                outcome = self.fence.hand_on(
                    attempt,
                    f"{WORKER_LOST}: {attempt.worker} sent no heartbeat for "
                    f"{self.heartbeat_s:g} s during attempt {attempt.number}",
                )
                if outcome:
                    log.warning(
                        "job %s: worker %s lost during attempt %d; job %s",
                        attempt.job_id,
                        attempt.worker,
                        attempt.number,
                        "queued again" if outcome == "queued" else outcome,
                    )
        forget_old_lost(self.client, self.keys, lost)
        done = []
        for handoff in self.fence.pending_handoffs():
            lock = f"{self.keys.prefix}:handoff-lock:{handoff.member.decode()}"
            if not self.client.set(lock, "1", nx=True, ex=60):
                continue  # another worker is doing this one
            try:
                self.follow_up(handoff)
                self.fence.handoff_done(handoff)
                done.append(handoff)
            except Exception:  # noqa: BLE001 - retried on the next sweep; never kill the worker
                log.exception("follow-up of job %s failed; retrying later", handoff.attempt.job_id)
            finally:
                self.client.delete(lock)
        return done

    def follow_up(self, handoff: Handoff) -> None:
        """RQ, MongoDB and Optuna side of one handoff (each step idempotent)."""
        attempt = handoff.attempt
        fields = self.client.hmget(
            self.keys.job(attempt.job_id), "reason", "sweep", f"trial.{attempt.number}"
        )
        reason, sweep, trial = (None if v is None else v.decode() for v in fields)
        reason = reason or WORKER_LOST
        if handoff.outcome != "finished":
            _end_attempt_runs(self.settings, attempt.job_id, attempt.number, reason)
            if sweep and trial:
                from jobs.sweeps import fail_trial

                # Before the job is queued again, so that its next attempt finds the
                # parameters waiting in the study.
                fail_trial(
                    self.settings,
                    self.client,
                    sweep,
                    int(trial),
                    reason=reason,
                    run_again=handoff.outcome == "queued",
                )
        if handoff.outcome == "queued":
            rq_adapter.requeue(self.client, attempt.job_id)
        else:
            rq_adapter.end_started(
                self.client, attempt.job_id, handoff.outcome, reason, self.fence.retention_s
            )


def _end_attempt_runs(settings: Settings, job_id: str, attempt: int, reason: str) -> None:
    from tracking.database import open_database
    from tracking.jobruns import end_attempt_runs

    with open_database(settings, indexes=False) as db:
        ended = end_attempt_runs(db, job_id, attempt, status="failed", reason=reason)
    for experiment_id in ended:
        log.warning(
            "experiment %s (job %s attempt %d) marked failed: %s",
            experiment_id,
            job_id,
            attempt,
            reason,
        )


__all__ = ["WORKER_LOST", "Recovery"]
