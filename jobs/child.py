"""Hooks of the ``eegfs`` process that runs a job (installed by the CLI when a worker set the
job context, see :class:`services.settings.JobContext`).

* Every run it starts records ``job: {id, attempt, worker}`` (and ``sweep``, ``trial``), and the
  job hash records ``run.<attempt> = experiment id``: the two are linked both ways.
* A run is marked ``completed`` only after this attempt claimed the job's completion
  (:meth:`jobs.fence.Fence.claim`); an attempt that was handed on marks its run ``failed``.
* A sweep trial reports its validation metric after each epoch; when the pruner says so the
  trial is told ``pruned`` and the run ends ``stopped`` with reason "pruned".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import redis

from jobs.fence import Attempt, Fence
from jobs.keys import JobKeys
from jobs.queue import DEFAULT_RETENTION_S
from services.connections import redis_client
from services.settings import Settings
from tracking.hooks import RunHooks, RunStopped, set_run_hooks

log = logging.getLogger(__name__)

#: How long a finishing run keeps trying to reach Redis to claim its job's completion.
CLAIM_PATIENCE_S = 30.0
PRUNED = "pruned"


class _Trial:
    """The sweep trial that this process trains (loaded lazily: only trial jobs need Optuna)."""

    def __init__(self, settings: Settings, client: redis.Redis, sweep: str, number: int) -> None:
        import optuna

        from jobs.optuna_adapter import open_trial
        from jobs.sweeps import load_study, load_sweep

        config = load_sweep(settings, client, sweep)
        self.metric = config.metric
        self.number = number
        self.study = load_study(settings, client, config)
        self.trial = open_trial(self.study, number)
        self._pruned_state = optuna.trial.TrialState.PRUNED

    def link(self, experiment_id: str) -> None:
        self.trial.set_user_attr("experiment_id", experiment_id)

    def report(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Report this epoch's metric; True when the pruner stops the trial."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), epoch)
        return self.trial.should_prune()

    def tell_pruned(self) -> None:
        self.study.tell(self.number, state=self._pruned_state, skip_if_finished=True)


class _JobHooks:
    """The run hooks of one job attempt (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        ctx = settings.job
        self.ctx = ctx
        self.client = redis_client(settings.redis_url)
        self.keys = JobKeys(settings.jobs_prefix)
        self.fence = Fence(self.client, self.keys, retention_s=DEFAULT_RETENTION_S)
        self.attempt = Attempt(ctx.job_id, ctx.attempt, ctx.worker)
        self.trial = None
        if ctx.sweep is not None and ctx.trial is not None:
            self.trial = _Trial(settings, self.client, ctx.sweep, ctx.trial)

    def start_fields(self) -> dict:
        job = {"id": self.ctx.job_id, "attempt": self.ctx.attempt, "worker": self.ctx.worker}
        if self.trial is not None:
            job.update(sweep=self.ctx.sweep, trial=self.ctx.trial)
        return {"job": job}

    def on_start(self, experiment_id: str) -> None:
        try:
            self.client.hset(
                self.keys.job(self.ctx.job_id), f"run.{self.ctx.attempt}", experiment_id
            )
        except redis.RedisError as exc:  # the experiment records the job: the link survives
            log.warning(
                "could not record experiment %s on job %s: %s", experiment_id, self.ctx.job_id, exc
            )
        if self.trial is not None:
            self.trial.link(experiment_id)

    def on_epoch(self, experiment_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.trial is None or not self.trial.report(epoch, metrics):
            return
        if not _claim(self.fence, self.attempt):
            raise RunStopped(_handed_on(self.attempt))
        self.trial.tell_pruned()
        raise RunStopped(PRUNED)

    def may_complete(self, experiment_id: str) -> str | None:
        return None if _claim(self.fence, self.attempt) else _handed_on(self.attempt)


def install_job_hooks(settings: Settings) -> None:
    """Install the run hooks of ``settings.job`` in this process (see the module docstring)."""
    if settings.job is None:
        return
    hooks = _JobHooks(settings)
    set_run_hooks(
        RunHooks(
            start_fields=hooks.start_fields(),
            on_start=hooks.on_start,
            on_epoch=hooks.on_epoch,
            may_complete=hooks.may_complete,
        )
    )


def _claim(fence: Fence, attempt: Attempt) -> bool:
    deadline = time.monotonic() + CLAIM_PATIENCE_S
    while True:
        try:
            return fence.claim(attempt)
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                log.error(
                    "Redis did not answer the completion claim of job %s: %s", attempt.job_id, exc
                )
                return False
            time.sleep(1.0)


def _handed_on(attempt: Attempt) -> str:
    return (
        f"job {attempt.job_id} attempt {attempt.number} was handed on to another worker (or "
        f"its completion could not be claimed); this attempt's result is discarded"
    )


__all__ = ["PRUNED", "install_job_hooks"]
