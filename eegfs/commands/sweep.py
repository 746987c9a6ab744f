"""``eegfs sweep create|show|list``: hyperparameter sweeps run by the workers."""

from __future__ import annotations

import json

import click

from eegfs.commands import console
from services.settings import Settings


@click.group()
def sweep() -> None:
    """Hyperparameter sweeps (Optuna) whose trials are queued training jobs.

    \b
    Example (the space file format: docs/jobs.md, docs/sweep_space.example.yaml):
      eegfs sweep create lr-search --challenge 2 --space docs/sweep_space.example.yaml \\
            --trials 8 --sampler tpe --pruner median
      eegfs worker --burst & eegfs worker --burst
      eegfs sweep show lr-search
    """


@sweep.command()
@click.argument("name")
@click.option("--challenge", type=click.Choice(["1", "2"]), required=True)
@click.option(
    "--space",
    "space",
    type=click.Path(dir_okay=False),
    required=True,
    help="Search-space YAML file (fixed `train:` options and `params:` to search).",
)
@click.option("--trials", type=int, required=True, help="Number of trials (one job each).")
@click.option(
    "--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True
)
@click.option(
    "--pruner",
    type=click.Choice(["none", "median"]),
    default="none",
    show_default=True,
    help="median: stop trials worse than the median at an epoch.",
)
@click.option(
    "--pruner-startup-trials",
    type=int,
    default=2,
    show_default=True,
    help="Trials that finish before the pruner may stop any.",
)
@click.option(
    "--pruner-warmup-epochs",
    type=int,
    default=1,
    show_default=True,
    help="Epochs of each trial before it may be stopped.",
)
@click.option("--seed", type=int, default=None, help="Seed of the sampler.")
@click.option("--queue", default="default", show_default=True)
@click.option("--max-attempts", type=int, default=3, show_default=True)
@click.option(
    "--model-name",
    default=None,
    help="Registry name of the best model (default c<challenge>-<model>).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def create(
    settings: Settings,
    name,
    challenge,
    space,
    trials,
    sampler,
    pruner,
    pruner_startup_trials,
    pruner_warmup_epochs,
    seed,
    queue,
    max_attempts,
    model_name,
    as_json,
) -> None:
    """Create sweep NAME and queue its trial jobs."""
    from dataclasses import asdict

    from jobs.sweeps import create_sweep

    config = create_sweep(
        settings,
        name,
        challenge=int(challenge),
        space_path=space,
        trials=trials,
        sampler=sampler,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        pruner_warmup_epochs=pruner_warmup_epochs,
        seed=seed,
        queue=queue,
        max_attempts=max_attempts,
        model_name=model_name,
    )
    if as_json:
        click.echo(json.dumps(asdict(config), indent=2))
        return
    click.echo(
        f"sweep {name}: {trials} trial job(s) queued on {queue!r} ({sampler} sampler, pruner "
        f"{pruner}, minimising {config.metric}); run workers with `eegfs worker`, follow with "
        f"`eegfs sweep show {name}`"
    )


@sweep.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(settings: Settings, name, as_json) -> None:
    """Trials of sweep NAME (state, parameters, value, experiment) and the best trial."""
    from rich.table import Table

    from jobs.sweeps import show_sweep

    doc = show_sweep(settings, name)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    table = Table("trial", "state", "params", doc["metric"], "experiment")
    for t in doc["trials"]:
        table.add_row(
            str(t["number"])
            + (f" (retry of {t['retry_of']})" if t["retry_of"] is not None else ""),
            t["state"],
            json.dumps(t["params"]),
            "-" if t["value"] is None else f"{t['value']:.4f}",
            t["experiment_id"] or "-",
        )
    console().print(table)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(doc["counts"].items())) or "no trials yet"
    click.echo(f"trials          {counts} (of {doc['config']['trials']} queued)")
    best = doc["best"]
    if best:
        click.echo(
            f"best            trial {best['number']}: {doc['metric']} {best['value']:.4f} "
            f"{json.dumps(best['params'])} (experiment {best['experiment_id']}; registered "
            f"with alias {doc['alias']})"
        )


@sweep.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_sweeps_command(settings: Settings, as_json) -> None:
    """Names of all sweeps."""
    from jobs.sweeps import list_sweeps

    names = list_sweeps(settings)
    click.echo(json.dumps(names) if as_json else ("\n".join(names) or "no sweeps"))


def register(cli: click.Group) -> None:
    cli.add_command(sweep)


__all__ = ["register"]
