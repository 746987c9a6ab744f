"""``eegfs jobs submit|list|show|cancel|retry``, ``eegfs worker`` and ``eegfs workers``."""

from __future__ import annotations

import json

import click

from eegfs.commands import console
from services.settings import Settings


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group()
def jobs() -> None:
    """The job queue: trainings and feature builds run by `eegfs worker` processes.

    \b
    Examples:
      eegfs jobs submit train --challenge 2 --data data/demo/challenge2_R*.h5 --epochs 4
      eegfs jobs submit features build --input data/demo/*.h5 --participants data/demo/participants.tsv
      eegfs jobs list
      eegfs jobs show JOB_ID
    """


def _check_cli_args(words: tuple[str, ...], args: list[str]) -> None:
    """Parse ``args`` with the real ``eegfs`` command (without running it): errors show now."""
    from eegfs.cli import cli

    command: click.Command = cli
    for word in words:
        command = command.commands[word]  # type: ignore[attr-defined]
    command.make_context(" ".join(("eegfs", *words)), list(args))


@jobs.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--queue", default="default", show_default=True, help="Queue to put the job on.")
@click.option(
    "--max-attempts",
    type=int,
    default=3,
    show_default=True,
    help="Attempts before a job whose workers keep getting lost is failed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def submit(settings: Settings, queue, max_attempts, as_json, command, args) -> None:
    """Queue COMMAND ARGS: `train ...` (any eegfs train options), `features build ...`,
    `noop` or `spin N` (pool checks).

    The arguments are checked now with the command's own parser. Paths of files that exist
    here are made absolute: a worker on another machine needs the same paths (a shared file
    system), or its job fails naming the missing file. Training jobs upload their checkpoints
    to GridFS, so any machine can register and load their models.
    """
    from jobs.queue import CLI_COMMANDS, JobQueue, absolute_paths

    args = list(args)
    if command == "features":
        if not args or args[0] != "build":
            raise click.UsageError("only `features build` can be submitted as a job")
        command, args = "features build", args[1:]
    if command == "trial":
        raise click.UsageError("trial jobs are made by `eegfs sweep create`")
    if command in CLI_COMMANDS:
        _check_cli_args(CLI_COMMANDS[command], args)
        args = absolute_paths(args)
        if command == "train" and "--upload-checkpoints" not in args:
            args.append("--upload-checkpoints")
    with JobQueue(settings) as queue_:
        job_id = queue_.submit(command, args, queue=queue, max_attempts=max_attempts)
        record = queue_.get(job_id)
    if as_json:
        _echo_json(record.to_dict())
    else:
        click.echo(f"job {job_id} queued on {queue!r}: {command} {' '.join(args)}".rstrip())
        click.echo(f"follow it with   eegfs jobs show {job_id}")


@jobs.command(name="list")
@click.option("--state", default=None, help="Only jobs in this state (queued, started, ...).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_jobs(settings: Settings, state, limit, as_json) -> None:
    """The newest jobs: state, attempts, worker, experiment ids, times."""
    from rich.table import Table

    from jobs.queue import JobQueue

    with JobQueue(settings) as queue_:
        records = queue_.list(state=state, limit=limit)
    if as_json:
        _echo_json([r.to_dict() for r in records])
        return
    table = Table("job", "state", "command", "attempts", "worker", "experiments", "submitted")
    for r in records:
        table.add_row(
            r.id,
            r.state,
            " ".join([r.command, *r.args])[:60],
            f"{r.attempts}/{r.max_attempts}",
            r.worker or "-",
            " ".join(r.experiments[k] for k in sorted(r.experiments)) or "-",
            (r.submitted_at or "")[:19],
        )
    console().print(table)


@jobs.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(settings: Settings, job_id, as_json) -> None:
    """One job: command, state, attempts, worker, times, reason, and its experiments."""
    from jobs.queue import JobQueue
    from tracking.database import open_database
    from tracking.errors import TrackingError
    from tracking.jobruns import job_runs

    with JobQueue(settings) as queue_:
        record = queue_.get(job_id)
    doc = record.to_dict()
    try:
        with open_database(settings, indexes=False) as db:
            doc["runs"] = job_runs(db, job_id)
    except TrackingError as exc:
        doc["runs_error"] = str(exc)
    if as_json:
        _echo_json(doc)
        return
    for key in (
        "id",
        "state",
        "command",
        "args",
        "queue",
        "attempts",
        "max_attempts",
        "worker",
        "submitted_at",
        "started_at",
        "ended_at",
        "reason",
        "sweep",
        "trial",
        "rq_status",
        "result",
    ):
        value = doc.get(key)
        if value not in (None, "", [], {}):
            click.echo(f"{key:14s}{json.dumps(value) if isinstance(value, list | dict) else value}")
    for run in doc.get("runs", []):
        click.echo(
            f"experiment    {run['experiment_id']} (attempt {run['attempt']}, {run['status']}"
            + (f": {run['error']}" if run.get("error") else "")
            + ")"
        )
    if doc.get("runs_error"):
        click.echo(f"experiments   unknown: {doc['runs_error']}")


@jobs.command()
@click.argument("job_id")
@click.pass_obj
def cancel(settings: Settings, job_id) -> None:
    """Cancel a queued job, or stop a running one (its run ends `stopped`)."""
    from jobs.queue import JobQueue

    with JobQueue(settings) as queue_:
        click.echo(f"job {job_id}: {queue_.cancel(job_id)}")


@jobs.command()
@click.argument("job_id")
@click.pass_obj
def retry(settings: Settings, job_id) -> None:
    """Queue a failed or canceled job again (a new attempt, a new experiment)."""
    from jobs.queue import JobQueue

    with JobQueue(settings) as queue_:
        queue_.retry(job_id)
    click.echo(f"job {job_id} queued again")


@click.command()
@click.option("--queue", default="default", show_default=True, help="Queue to take jobs from.")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--max-jobs", type=int, default=None, help="Stop after this many jobs.")
@click.option(
    "--heartbeat",
    type=float,
    default=None,
    help="Heartbeat interval in seconds (default EEGFS_HEARTBEAT_S or 5); a worker that stops "
    "beating is noticed within two intervals and its job handed on.",
)
@click.option("--name", default=None, help="Worker name (default host.pid.xxxx).")
@click.pass_obj
def worker(settings: Settings, queue, burst, max_jobs, heartbeat, name) -> None:
    """Run queued jobs one at a time, each in a child process, until stopped (Ctrl-C waits for
    the running job; a second Ctrl-C kills it).

    \b
    Two machines, one Redis and one MongoDB (same REDIS_URL / MONGO_URI / shared data paths):
      machine-a$ eegfs worker
      machine-b$ eegfs worker
    """
    from jobs.worker import run_worker

    if heartbeat is not None:
        if not 0.1 <= heartbeat <= 3600:
            raise click.UsageError(f"--heartbeat must be 0.1-3600 seconds, got {heartbeat}")
        settings = settings.with_overrides(heartbeat_s=heartbeat)
    done = run_worker(
        settings, queue=queue, burst=burst, max_jobs=max_jobs, name=name, echo=click.echo
    )
    click.echo(f"worker stopped after {done} job(s)")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def workers(settings: Settings, as_json) -> None:
    """Live and lost workers: host, pid, queue, current job, started, last heartbeat."""
    from rich.table import Table

    from jobs.heartbeats import list_workers
    from jobs.keys import JobKeys
    from services.connections import redis_client

    found = list_workers(redis_client(settings.redis_url), JobKeys(settings.jobs_prefix))
    if as_json:
        _echo_json([w.to_dict() for w in found])
        return
    table = Table("worker", "state", "host", "pid", "queue", "job", "started", "last beat")
    for w in found:
        table.add_row(
            w.name,
            "[green]live[/green]" if w.state == "live" else "[red]lost[/red]",
            w.host or "-",
            str(w.pid or "-"),
            w.queue or "-",
            f"{w.job} (attempt {w.attempt})" if w.job else "-",
            (w.started or "")[:19],
            f"{w.last_beat_age_s:.1f} s ago" if w.last_beat_age_s is not None else "-",
        )
    console().print(table)
    if not found:
        click.echo("no worker has been seen; start one with `eegfs worker`")


def register(cli: click.Group) -> None:
    cli.add_command(jobs)
    cli.add_command(worker)
    cli.add_command(workers)


__all__ = ["register"]
