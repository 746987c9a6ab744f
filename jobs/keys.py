"""Names of the job queue's own Redis keys (RQ's keys keep their fixed ``rq:`` prefix).

Every key starts with the configurable prefix (``EEGFS_JOBS_PREFIX``, default ``eegfs``), so
several projects can share one Redis. Nothing here is found with KEYS: indexes are sorted sets
and hashes that list their members.

=====================================  ======  ================================================
key                                    type    what (TTL)
=====================================  ======  ================================================
``P:job:<id>``                         hash    a job: command, state, attempts, runs (kept
                                               ``retention`` seconds once it has ended)
``P:jobs``                             zset    job ids by submit time (index for ``jobs list``)
``P:running``                          hash    job id -> ``worker|attempt`` of each attempt
                                               that is running now (the fence)
``P:handoffs``                         set     jobs taken from lost workers whose follow-up
                                               (requeue in RQ, runs marked failed) is not done
``P:workers``                          zset    worker name -> last heartbeat (unix seconds)
``P:workers:info``                     hash    worker name -> JSON host, pid, queue, started
``P:worker:<name>``                    hash    a live worker's heartbeat (TTL: heartbeat_s)
``P:sweeps``                           zset    sweep names by creation time
``P:sweep:<name>``                     hash    a sweep's configuration (JSON fields)
``P:sweep:<name>:journal``             list    the Optuna study's journal, one JSON log a line
``P:sweep:<name>:lock``                string  a short lock while the best model is registered
=====================================  ======  ================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobKeys:
    """Key names under one prefix."""

    prefix: str = "eegfs"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    @property
    def handoffs(self) -> str:
        return f"{self.prefix}:handoffs"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def workers_info(self) -> str:
        return f"{self.prefix}:workers:info"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    @property
    def sweeps(self) -> str:
        return f"{self.prefix}:sweeps"

    def sweep(self, name: str) -> str:
        return f"{self.prefix}:sweep:{name}"

    def sweep_journal(self, name: str) -> str:
        return f"{self.prefix}:sweep:{name}:journal"

    def sweep_lock(self, name: str) -> str:
        return f"{self.prefix}:sweep:{name}:lock"


__all__ = ["JobKeys"]
