"""``eegfs models``: the model registry (list, show, register, alias, fetch, predictions)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eegfs.commands import console
from eegfs.commands.display import cell
from services.settings import Settings


@click.group()
def models() -> None:
    """Model registry: named models, numbered versions, aliases (production, candidate...)."""


@models.command("list")
@click.pass_obj
def models_list(settings: Settings) -> None:
    """Registered models with their latest version and aliases."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        found = ModelRegistry(db).list_models()
    table = Table("name", "latest", "aliases", "description")
    for m in found:
        aliases = ", ".join(f"{a}->v{v}" for a, v in sorted((m.get("aliases") or {}).items()))
        table.add_row(
            m["name"], f"v{m['latest_version']}", aliases or "-", m.get("description") or ""
        )
    console().print(table)


@models.command("show")
@click.argument("name")
@click.pass_obj
def models_show(settings: Settings, name: str) -> None:
    """Versions of one model with lineage (run, epoch, metrics, features, code)."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        versions = ModelRegistry(db).list_versions(name)
    table = Table(
        "version",
        "aliases",
        "run",
        "epoch",
        "metrics",
        "feature service / snapshot",
        "commit",
        "sha256",
        "portable",
        title=name,
    )
    for v in versions:
        lin = v["lineage"]
        table.add_row(
            f"v{v['version']}",
            ", ".join(v["aliases"]) or "-",
            f"{lin.get('experiment_name')} {str(lin['experiment_id'])[-8:]}",
            cell(lin.get("epoch")),
            json.dumps(lin.get("metrics") or {}),
            f"{lin.get('feature_service') or '-'} / {lin.get('snapshot_id') or '-'}",
            (lin.get("code_commit") or "-")[:10] + (" (dirty)" if lin.get("code_dirty") else ""),
            (v.get("sha256") or "-")[:16],
            "yes" if v.get("portable") else "no",
        )
    console().print(table)


@models.command("register")
@click.argument("name")
@click.argument("checkpoint_id", required=False)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="Register the best checkpoint of this run instead ('latest': the newest completed run).",
)
@click.option(
    "--challenge",
    type=click.Choice(["1", "2"]),
    default=None,
    help="With --run latest: the newest completed run of this challenge.",
)
@click.option(
    "--alias", "aliases", multiple=True, help="Alias to point at the new version (repeatable)."
)
@click.option("--description", default="", help="Free text.")
@click.pass_obj
def models_register(
    settings: Settings, name, checkpoint_id, run_id, challenge, aliases, description
) -> None:
    """Register checkpoint CHECKPOINT_ID (see `eegfs runs show`), or the best checkpoint of a run
    (--run), as the next version of NAME. The same file registered again keeps its version."""
    from tracking.database import open_database
    from tracking.registry import LATEST_RUN, ModelRegistry

    if (checkpoint_id is None) == (run_id is None):
        raise click.UsageError("give either CHECKPOINT_ID or --run RUN_ID (not both)")
    if challenge is not None and run_id != LATEST_RUN:
        raise click.UsageError("--challenge goes with --run latest only")
    with open_database(settings) as db:
        registry = ModelRegistry(db)
        if run_id is not None:
            checkpoint_id = str(
                registry.best_checkpoint_of(
                    run_id, challenge=None if challenge is None else int(challenge)
                )
            )
        version = registry.register(name, checkpoint_id, description=description, aliases=aliases)
    click.echo(
        f"{name} v{version['version']} <- checkpoint {checkpoint_id}"
        + ("" if run_id is None else f" (the best of run {version['lineage']['experiment_id']})")
        + ("" if version["portable"] else " (no GridFS copy: loadable only where the file is)")
    )


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
@click.pass_obj
def models_alias(settings: Settings, name, alias, version) -> None:
    """Point ALIAS of model NAME at VERSION (moves it if it pointed elsewhere)."""
    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        ModelRegistry(db).set_alias(name, alias, version)
    click.echo(f"{name}@{alias} -> v{version}")


@models.command("fetch")
@click.argument("name")
@click.argument("alias_or_version")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Directory for a GridFS download.",
)
@click.pass_obj
def models_fetch(settings: Settings, name, alias_or_version, dest) -> None:
    """A verified local copy of a model version (by number, alias or 'latest')."""
    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        path = ModelRegistry(db).fetch(name, alias_or_version, dest)
    click.echo(str(path))


@models.command("predictions")
@click.argument("name", required=False)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest N."
)
@click.pass_obj
def models_predictions(settings: Settings, name, limit) -> None:
    """Recorded `eegfs predict` runs (of model NAME, or all), newest first."""
    from rich.table import Table

    from tracking.predictions import list_predictions

    table = Table("id", "created", "model", "input", "windows", "subjects", "sources", "seconds")
    for p in list_predictions(settings, model=name, limit=limit):
        counts, model = p.get("counts") or {}, p.get("model") or {}
        sources = ", ".join(f"{k} {v}" for k, v in (counts.get("sources") or {}).items() if v)
        table.add_row(
            str(p["_id"]),
            cell(p.get("created_at")),
            f"{model.get('name')} v{model.get('version')}",
            f"{Path((p.get('input') or {}).get('path') or '-').name} "
            f"{((p.get('input') or {}).get('sha256') or '')[:12]}",
            cell(counts.get("windows")),
            cell(counts.get("subjects")),
            sources or "-",
            cell((p.get("timing") or {}).get("total_s")),
        )
    console().print(table)


def register(cli: click.Group) -> None:
    cli.add_command(models)


__all__ = ["models", "register"]
