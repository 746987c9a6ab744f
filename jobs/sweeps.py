"""Hyperparameter sweeps: an Optuna study on Redis whose trials are queued jobs.

``create_sweep`` stores the sweep's configuration, creates the study (journal storage on Redis,
JSON only: :mod:`jobs.optuna_adapter`) and queues one ``trial`` job per trial. A worker running
a trial job asks the study for a trial (:func:`run_trial`), trains with its parameters as a
tracked ``eegfs train`` process (tagged ``sweep:<name>`` and ``trial:<n>``) that reports the
validation metric of each epoch to the trial and stops when the pruner says so (the run ends
``stopped``, reason "pruned"), then tells the study the best value and registers the best
trial's model with the alias ``sweep-<name>``.

Optuna's journal storage has no trial heartbeats, so a trial whose worker died is found by the
worker heartbeats (:mod:`jobs.recovery`): it is failed in the study and its parameters are
enqueued again (:func:`fail_trial`), which the next ask of the study picks up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import redis

from jobs.errors import FencedError, JobFailedError, SweepError
from jobs.fence import COMPLETING, Attempt, Fence, utcnow_text
from jobs.keys import JobKeys
from jobs.optuna_adapter import journal_storage
from jobs.queue import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, DEFAULT_RETENTION_S, JobQueue
from jobs.space import Space, load_space, make_pruner, make_sampler, train_options
from services.connections import redis_client
from services.settings import Settings

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: The metric a sweep minimises per challenge: the challenge's primary validation metric
#: (``training.challenges``; a test checks that they agree).
OBJECTIVE = {1: "val_nrmse", 2: "val_subject_nrmse"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,80}$")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep as stored in ``P:sweep:<name>``."""

    name: str
    challenge: int
    metric: str
    trials: int
    sampler: str
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    seed: int | None
    queue: str
    max_attempts: int
    space: dict[str, Any]
    model_name: str | None = None
    created_at: str = ""
    jobs: list[str] = field(default_factory=list)

    @property
    def alias(self) -> str:
        """The registry alias of the sweep's best model."""
        return f"sweep-{self.name}"

    def parsed_space(self) -> Space:
        return Space(train=dict(self.space["train"]), params=dict(self.space["params"]))


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    if isinstance(value, str) and not value.startswith("-") and os.path.exists(value):
        return os.path.abspath(value)
    return value


def create_sweep(
    settings: Settings,
    name: str,
    *,
    challenge: int,
    space_path: str | Path,
    trials: int,
    sampler: str = "tpe",
    pruner: str = "none",
    pruner_startup_trials: int = 2,
    pruner_warmup_epochs: int = 1,
    seed: int | None = None,
    queue: str = DEFAULT_QUEUE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    model_name: str | None = None,
    client: redis.Redis | None = None,
) -> SweepConfig:
    """Create sweep ``name`` and queue its ``trials`` trial jobs.

    Raises
    ------
    SweepError
        A bad name, space file, sampler or pruner, or a sweep of that name that exists.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise SweepError(
            f"sweep name {name!r} is not allowed: 1-81 letters, digits, '_' or '-', starting "
            "with a letter or digit"
        )
    if challenge not in OBJECTIVE:
        raise SweepError(f"--challenge must be 1 or 2, got {challenge!r}")
    if trials < 1:
        raise SweepError(f"--trials must be >= 1, got {trials}")
    space = load_space(space_path)
    space = Space(train={k: _absolute(v) for k, v in space.train.items()}, params=space.params)
    make_sampler(sampler, space, seed)  # validates the sampler (and a grid)
    make_pruner(pruner, pruner_startup_trials, pruner_warmup_epochs)
    client = client if client is not None else redis_client(settings.redis_url)
    keys = JobKeys(settings.jobs_prefix)
    config = SweepConfig(
        name=name,
        challenge=challenge,
        metric=OBJECTIVE[challenge],
        trials=trials,
        sampler=sampler,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        pruner_warmup_epochs=pruner_warmup_epochs,
        seed=seed,
        queue=queue,
        max_attempts=max_attempts,
        space=space.to_dict(),
        model_name=model_name,
        created_at=utcnow_text(),
    )
    if not client.hsetnx(keys.sweep(name), "config", json.dumps(asdict(config))):
        raise SweepError(
            f"a sweep named {name!r} exists already (see `eegfs sweep show {name}`); pick "
            "another name"
        )
    client.zadd(keys.sweeps, {name: math.floor(time.time())})
    optuna.create_study(
        study_name=name,
        storage=journal_storage(client, keys.sweep_journal(name)),
        direction="minimize",
    )
    jobs = JobQueue(settings, client=client).submit_many(
        [("trial", [])] * trials, queue=queue, max_attempts=max_attempts, sweep=name
    )
    config = SweepConfig(**{**asdict(config), "jobs": jobs})
    client.hset(keys.sweep(name), "config", json.dumps(asdict(config)))
    return config


def load_sweep(settings: Settings, client: redis.Redis, name: str) -> SweepConfig:
    """The stored configuration of sweep ``name``."""
    raw = client.hget(JobKeys(settings.jobs_prefix).sweep(name), "config")
    if raw is None:
        raise SweepError(f"no sweep named {name!r}; list them with `eegfs sweep list`")
    return SweepConfig(**json.loads(raw))


def load_study(
    settings: Settings, client: redis.Redis, config: SweepConfig, *, salt: str = ""
) -> optuna.Study:
    """The sweep's study, with its sampler and pruner.

    Each trial job makes its own sampler: with a ``--seed``, the sampler's seed is derived from
    it and ``salt`` (the job attempt), or every process would draw the same parameters.
    """
    seed = None
    if config.seed is not None:
        seed = (config.seed * 1_000_003 + zlib.crc32(salt.encode())) % 2**31
    return optuna.load_study(
        study_name=config.name,
        storage=journal_storage(client, JobKeys(settings.jobs_prefix).sweep_journal(config.name)),
        sampler=make_sampler(config.sampler, config.parsed_space(), seed),
        pruner=make_pruner(
            config.pruner, config.pruner_startup_trials, config.pruner_warmup_epochs
        ),
    )


def _trial_state(study: optuna.Study, number: int) -> optuna.trial.TrialState:
    return study.get_trials(deepcopy=False)[number].state


def run_trial(settings: Settings, attempt: Attempt, sweep: str) -> dict[str, Any]:
    """One trial job (in the work horse): ask, train, tell, register the best model."""
    from jobs.tasks import run_cli

    client = redis_client(settings.redis_url)
    keys = JobKeys(settings.jobs_prefix)
    fence = Fence(client, keys, retention_s=DEFAULT_RETENTION_S)
    config = load_sweep(settings, client, sweep)
    study = load_study(settings, client, config, salt=f"{attempt.job_id}:{attempt.number}")
    trial = study.ask(config.parsed_space().distributions())
    number = trial.number
    client.hset(
        keys.job(attempt.job_id), mapping={f"trial.{attempt.number}": number, "trial": number}
    )
    argv = [
        "train",
        "--challenge",
        str(config.challenge),
        *train_options(config.space["train"]),
        *train_options(trial.params),
        "--name",
        f"{sweep}-t{number}",
        "--tag",
        f"sweep:{sweep}",
        "--tag",
        f"trial:{number}",
        "--upload-checkpoints",
        "--no-progress",
    ]
    try:
        run_cli(settings, attempt, argv, sweep=sweep, trial=number)
    except JobFailedError:
        if _trial_state(study, number) == optuna.trial.TrialState.PRUNED:
            return {"trial": number, "state": "pruned", "params": trial.params}
        if fence.is_current(attempt):
            study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        raise
    state = client.hget(keys.job(attempt.job_id), "state")
    if not fence.is_current(attempt) or state != COMPLETING.encode():
        raise FencedError(
            f"trial {number} of sweep {sweep}: job {attempt.job_id} attempt {attempt.number} was "
            "handed on to another worker; its result is discarded"
        )
    frozen = study.get_trials(deepcopy=False)[number]
    values = [v for v in frozen.intermediate_values.values() if math.isfinite(v)]
    if not values:
        study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        raise JobFailedError(f"trial {number} of sweep {sweep} reported no {config.metric}")
    value = min(values)
    study.tell(number, value, skip_if_finished=True)
    registered = register_best(settings, client, config, study)
    return {
        "trial": number,
        "state": "complete",
        "value": value,
        "params": trial.params,
        "experiment_id": frozen.user_attrs.get("experiment_id"),
        "registered": registered,
    }


def fail_trial(
    settings: Settings,
    client: redis.Redis,
    sweep: str,
    number: int,
    *,
    reason: str,
    run_again: bool,
) -> bool:
    """Fail trial ``number`` if it is still running; with ``run_again`` enqueue its parameters.

    Returns True when the trial was failed here.
    """
    config = load_sweep(settings, client, sweep)
    study = load_study(settings, client, config)
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False
    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    log.warning("sweep %s: trial %d failed (%s)", sweep, number, reason)
    if run_again and trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": number})
    return True


def register_best(
    settings: Settings, client: redis.Redis, config: SweepConfig, study: optuna.Study
) -> dict[str, Any] | None:
    """Register the best trial's best checkpoint; alias ``sweep-<name>`` points at it.

    Serialised by a Redis lock so two workers finishing at once cannot leave the alias on the
    worse trial. Registering the same checkpoint again changes nothing.
    """
    from bson import ObjectId

    from tracking.database import open_database
    from tracking.registry import ModelRegistry
    from tracking.schema import CHECKPOINTS

    lock = client.lock(
        JobKeys(settings.jobs_prefix).sweep_lock(config.name), timeout=120, blocking_timeout=120
    )
    with lock:
        try:
            best = study.best_trial
        except ValueError:
            return None
        experiment_id = best.user_attrs.get("experiment_id")
        if not experiment_id:
            return None
        model = best.params.get("model") or config.space["train"].get("model") or "cnn"
        name = config.model_name or f"c{config.challenge}-{model}"
        with open_database(settings, indexes=False) as db:
            ckpt = db[CHECKPOINTS].find_one(
                {"experiment_id": ObjectId(experiment_id), "is_best": True}
            )
            if ckpt is None:
                log.warning(
                    "sweep %s: best trial %d has no best checkpoint", config.name, best.number
                )
                return None
            version = ModelRegistry(db).register(
                name,
                ckpt["_id"],
                description=f"best trial of sweep {config.name}",
                aliases=[config.alias],
                tags=[f"sweep:{config.name}", f"trial:{best.number}"],
            )
    return {
        "model": name,
        "version": version["version"],
        "alias": config.alias,
        "trial": best.number,
    }


def show_sweep(
    settings: Settings, name: str, *, client: redis.Redis | None = None
) -> dict[str, Any]:
    """Everything ``eegfs sweep show`` prints: configuration, trials, best trial, model."""
    client = client if client is not None else redis_client(settings.redis_url)
    config = load_sweep(settings, client, name)
    study = load_study(settings, client, config)
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "params": t.params,
            "value": t.value,
            "epochs_reported": len(t.intermediate_values),
            "experiment_id": t.user_attrs.get("experiment_id"),
            "retry_of": t.user_attrs.get("retry_of"),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    best = None
    try:
        b = study.best_trial
        best = {
            "number": b.number,
            "value": b.value,
            "params": b.params,
            "experiment_id": b.user_attrs.get("experiment_id"),
        }
    except ValueError:
        pass
    return {
        "name": name,
        "config": {k: v for k, v in asdict(config).items() if k != "jobs"},
        "jobs": config.jobs,
        "counts": counts,
        "trials": trials,
        "best": best,
        "metric": config.metric,
        "alias": config.alias,
    }


def list_sweeps(settings: Settings, *, client: redis.Redis | None = None) -> list[str]:
    client = client if client is not None else redis_client(settings.redis_url)
    return [n.decode() for n in client.zrange(JobKeys(settings.jobs_prefix).sweeps, 0, -1)]


__all__ = [
    "OBJECTIVE",
    "SweepConfig",
    "create_sweep",
    "fail_trial",
    "list_sweeps",
    "load_study",
    "load_sweep",
    "register_best",
    "run_trial",
    "show_sweep",
]
