"""``eegfs dashboard``: the live web dashboard (Streamlit)."""

from __future__ import annotations

import click

from services.settings import Settings


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. The app has no login: another address prints a warning.",
)
@click.option(
    "--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
@click.pass_obj
def dashboard(settings: Settings, host: str, port: int) -> None:
    """Serve the web dashboard: runs with live curves, compare, models, features, services.

    \b
    Needs the dashboard extra: pip install -e '.[dashboard]' (make demo installs it).
    Reads the servers of REDIS_URL / MONGO_URI / MONGO_DB and the data of EEGFS_DATA_DIR;
    writes nothing to them. Example:
      eegfs dashboard                  # then open http://127.0.0.1:8501
    """
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise click.ClickException(
            "the dashboard needs Streamlit: pip install -e '.[dashboard]' (or make install)"
        )
    from dashboard.server import serve

    def echo(text: str) -> None:
        click.echo(text, err=text.startswith("warning"))

    raise SystemExit(serve(settings, host=host, port=port, echo=echo))


def register(cli: click.Group) -> None:
    cli.add_command(dashboard)


__all__ = ["register"]
