"""``eegfs features build|apply|materialize|get|env``: thin wrappers over ``pipelines`` (build)
and ``featurestore`` (the rest)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from eegfs.commands import layout_options
from services.settings import Settings


@click.group()
def features() -> None:
    """Band-power features: HDF5 -> Parquet snapshots -> Feast -> Redis (see docs/features.md)."""


@features.command()
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="HDF5 window file(s); a shell glob after one --input also works (--input data/demo/*.h5).",
)
@click.argument("more_inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--participants",
    required=True,
    type=click.Path(path_type=Path),
    help="BIDS participants.tsv listing every subject of the inputs.",
)
@click.option("--force", is_flag=True, help="Recompute inputs whose snapshot already exists.")
@layout_options
@click.option(
    "--chunk-windows", type=int, default=256, show_default=True, help="Windows per computed chunk."
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Threads reading/inflating HDF5 chunks (default: CPUs + 1, at most 8).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_obj
def build(
    settings: Settings,
    inputs,
    more_inputs,
    participants,
    force,
    layout,
    mapping,
    sfreq,
    chunk_windows,
    workers,
    no_progress,
) -> None:
    """Compute band-power features of HDF5 window files into Parquet snapshots.

    One snapshot per input (unchanged inputs are skipped), written under
    $EEGFS_DATA_DIR/features. Defaults: Welch, periodic Hann, 1 s segments, 50 % overlap;
    bands delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz.

    \b
    Example:
      eegfs features build --input data/demo/*.h5 --participants data/demo/participants.tsv
    """
    from eegfs.commands import parse_layout
    from pipelines.build import BuildOptions, build_features

    files = [*inputs, *more_inputs]
    if not files:
        raise click.UsageError("give at least one HDF5 file with --input")
    lay = parse_layout(layout, mapping)
    options = BuildOptions(
        force=force,
        layout=lay,
        sfreq=sfreq,
        chunk_windows=chunk_windows,
        workers=workers,
        progress=not no_progress,
    )
    report = build_features(settings.features_dir, files, participants, options)
    click.echo(report.summary())


@features.command()
@click.pass_obj
def apply(settings: Settings) -> None:
    """Register feature_repo/ definitions in the Feast registry ($EEGFS_DATA_DIR/features/feast)."""
    from featurestore.commands import apply_feature_repo

    click.echo(apply_feature_repo(settings))


@features.command()
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Materialize snapshots up to this UTC time (ISO 8601; default now).",
)
@click.pass_obj
def materialize(settings: Settings, end: datetime | None) -> None:
    """Load every snapshot not yet online into Redis (REDIS_URL)."""
    from datetime import UTC

    from featurestore.commands import materialize_features

    click.echo(materialize_features(settings, end.replace(tzinfo=UTC) if end else None))


@features.command()
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    required=True,
    help="Subject id (NDAR... or sub-NDAR...); repeatable.",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    help="Feature service (repeatable); default: challenge1_inputs_v1 and challenge2_inputs_v1.",
)
@click.pass_obj
def get(settings: Settings, subjects, services) -> None:
    """Print a subject's online features from Redis as JSON (missing values are null)."""
    from featurestore.commands import online_features_record

    records = online_features_record(settings, list(subjects), list(services) or None)
    click.echo(json.dumps(records[0] if len(records) == 1 else records, indent=1))


@features.command()
@click.pass_obj
def env(settings: Settings) -> None:
    """Print the shell exports the plain Feast CLI needs in feature_repo/.

    EEGFS_FEAST_REDIS is Feast's Redis connection string derived from REDIS_URL; it includes the
    Redis password when REDIS_URL has one, so evaluate it rather than pasting it into logs. A
    password that this string cannot carry (a ',', a JSON value such as 123 or null, YAML
    specials) is refused with the reason; the other eegfs commands work with any password.

    \b
    Usage:  eval "$(eegfs features env)" && cd feature_repo && feast apply
    """
    import shlex

    from featurestore.shell_env import shell_environment

    variables = shell_environment(settings)
    for key, value in variables.items():
        click.echo(f"export {key}={shlex.quote(value)}")


def register(cli: click.Group) -> None:
    cli.add_command(features)


__all__ = ["register"]
