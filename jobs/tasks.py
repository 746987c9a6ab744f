"""What a job does, in the worker's work horse: ``jobs.tasks.execute(spec)``.

``train`` and ``features build`` run ``python -m eegfs <command> <args>`` in a fresh process
below the horse (it dies with the horse), with the worker's settings and the job context
(job id, attempt, worker; sweep and trial for a trial) in its environment, read back by
``services.settings``; its output goes to ``<data_dir>/jobs/<job id>/attempt-<n>.log``. The
``eegfs`` process of a job records ``job: {id, attempt}`` in its experiment and completes it
only while the attempt is current (:mod:`jobs.child`).

``noop`` returns the time it started (a pool check, and the latency benchmark); ``spin N`` burns
CPU for N loop iterations (the throughput benchmark).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobs import process
from jobs.errors import JobFailedError, JobsError
from jobs.fence import Attempt
from jobs.queue import CLI_COMMANDS
from services.settings import JobContext, Settings

log = logging.getLogger(__name__)

#: Lines of a failed command's output that become the job's failure reason.
FAILURE_TAIL_LINES = 12

_current: tuple[Settings, Attempt] | None = None
_last_result: Any = None
_last_error: str | None = None


def set_current(settings: Settings, attempt: Attempt | None) -> None:
    """Called by the worker in a fresh work horse: the attempt that this process runs."""
    global _current, _last_result, _last_error
    _current = None if attempt is None else (settings, attempt)
    _last_result = _last_error = None


def preload() -> None:
    """Prepare what every horse needs before the worker forks it, so that each job starts fast.

    Optuna is not preloaded: it would make the worker process, and so every fork, much larger
    for the sake of sweep trials only, which run for minutes anyway.
    """
    process.load_libc()


def execute(spec: dict[str, Any]) -> Any:
    """Run one job (RQ calls this in the work horse with the job's JSON spec)."""
    global _last_result, _last_error
    if _current is None:
        raise JobsError(
            "jobs.tasks.execute runs only in an `eegfs worker` (it needs the job's attempt)"
        )
    try:
        _last_result = _run(*_current, spec)
    except JobsError as exc:
        _last_error = str(exc)
        raise
    return _last_result


def _run(settings: Settings, attempt: Attempt, spec: dict[str, Any]) -> Any:
    command, args = spec["command"], [str(a) for a in spec.get("args", [])]
    if command == "noop":
        result: Any = {"started_at": time.time(), "worker": attempt.worker}
    elif command == "spin":
        result = _spin(int(args[0]) if args else 1_000_000)
    elif command in CLI_COMMANDS:
        result = run_cli(settings, attempt, [*CLI_COMMANDS[command], *args, "--no-progress"])
    elif command == "trial":
        from jobs.sweeps import run_trial

        result = run_trial(settings, attempt, spec["sweep"])
    else:
        raise JobsError(f"unknown job command {command!r}")
    return result


def failure_reason() -> str | None:
    """The message of the job failure raised in this horse (None when none was)."""
    return _last_error


def result_json(job) -> str:
    """The JSON text of what this horse's job returned (``null`` when nothing)."""
    try:
        return json.dumps(_last_result)
    except (TypeError, ValueError):
        return "null"


def _spin(iterations: int) -> dict[str, Any]:
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return {"iterations": iterations, "seconds": time.perf_counter() - started, "check": total}


def attempt_log_path(settings: Settings, attempt: Attempt) -> Path:
    return Path(settings.data_dir) / "jobs" / attempt.job_id / f"attempt-{attempt.number}.log"


def run_cli(
    settings: Settings,
    attempt: Attempt,
    argv: list[str],
    *,
    sweep: str | None = None,
    trial: int | None = None,
) -> dict[str, Any]:
    """Run ``python -m eegfs ARGV`` for this attempt; raise :class:`JobFailedError` on failure."""
    context = JobContext(
        job_id=attempt.job_id,
        attempt=attempt.number,
        worker=attempt.worker,
        sweep=sweep,
        trial=trial,
    )
    env = {**os.environ, **settings.with_overrides(job=context).to_env()}
    path = attempt_log_path(settings, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(path, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "eegfs", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=process.die_with_parent,  # noqa: PLW1509 - the horse has one thread
        )
        returncode = child.wait()
    result = {"returncode": returncode, "seconds": time.perf_counter() - started, "log": str(path)}
    if returncode != 0:
        raise JobFailedError(
            f"`eegfs {' '.join(argv[:2])}` exited with code {returncode}; its output ends with:\n"
            + _tail(path)
            + f"\n(full output: {path} on {attempt.worker})"
        )
    return result


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return "\n".join(lines[-FAILURE_TAIL_LINES:])


def attempt_ended(settings: Settings, client, attempt: Attempt, outcome: str, reason: str) -> None:
    """Follow-up of an attempt that failed or was canceled on a live worker.

    A canceled attempt's run is marked ``stopped`` (its process was killed); a trial that did
    not report its end is failed in its study.
    """
    fields = client.hmget(
        f"{settings.jobs_prefix}:job:{attempt.job_id}", "sweep", f"trial.{attempt.number}"
    )
    sweep, trial = (None if v is None else v.decode() for v in fields)
    try:
        if outcome == "canceled":
            from tracking.database import open_database
            from tracking.jobruns import end_attempt_runs

            with open_database(settings, indexes=False) as db:
                end_attempt_runs(
                    db, attempt.job_id, attempt.number, status="stopped", reason=reason
                )
        if sweep and trial:
            from jobs.sweeps import fail_trial

            fail_trial(settings, client, sweep, int(trial), reason=reason, run_again=False)
    except Exception:  # noqa: BLE001 - bookkeeping after a failure must not hide the failure
        log.exception(
            "could not record the end of job %s attempt %d", attempt.job_id, attempt.number
        )


__all__ = ["attempt_ended", "execute", "preload", "result_json", "run_cli", "set_current"]
