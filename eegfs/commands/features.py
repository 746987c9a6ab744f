"""``eegfs features build|push|quality|apply|materialize|get|env``: thin wrappers over
``pipelines`` (build, quality) and ``featurestore`` (the rest).

``build`` and ``push`` exit 0 when every row passed the data-quality gates (or was accepted), 3
(:data:`eegfs.errors.EXIT_ROWS_REJECTED`) when it built but held rows back, 1 when it failed.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from eegfs.commands import console, layout_options
from eegfs.commands.display import cell
from eegfs.errors import EXIT_ROWS_REJECTED
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
@click.option(
    "--accept-failing",
    is_flag=True,
    help="Serve rows that fail a data-quality gate anyway (recorded in the manifest); rows with "
    "another channel count than the store's are never served.",
)
@click.option(
    "--lenient",
    is_flag=True,
    help="Skip bad participants.tsv rows (listed in a warning) instead of failing.",
)
@click.pass_context
def build(
    ctx: click.Context,
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
    accept_failing,
    lenient,
) -> None:
    """Compute band-power features of HDF5 window files into Parquet snapshots.

    One snapshot per input (unchanged inputs are skipped), written under
    $EEGFS_DATA_DIR/features. Defaults: Welch, periodic Hann, 1 s segments, 50 % overlap;
    bands delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz.

    Per-subject rows are served only when they pass the data-quality gates (finite values,
    good-window fraction >= 0.5, median total power within 0.01-1e5 uV^2, channel count and
    rate of the challenge's earlier snapshots); the others are held back, listed, and evaluated
    again by the next build. Exit status: 0 all served, 3 built but rows held back, 1 failed.

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
        accept_failing=accept_failing,
        lenient_participants=lenient,
    )
    settings: Settings = ctx.obj
    report = build_features(settings.features_dir, files, participants, options)
    click.echo(report.summary())
    _print_rejected(report.to_report())
    if report.n_held_back:
        ctx.exit(EXIT_ROWS_REJECTED)


@features.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="One HDF5 window file (a new recording).",
)
@click.option(
    "--participants",
    type=click.Path(path_type=Path),
    default=None,
    help="participants.tsv listing the file's subjects (built and pushed as by `build`); "
    "without it, subjects no participants.tsv of the store lists get no demographics.",
)
@layout_options
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--accept-failing", is_flag=True, help="Serve rows that fail a data-quality gate anyway."
)
@click.option("--lenient", is_flag=True, help="Skip bad participants.tsv rows instead of failing.")
@click.pass_context
def push(
    ctx: click.Context,
    input_path,
    participants,
    layout,
    mapping,
    sfreq,
    no_progress,
    accept_failing,
    lenient,
) -> None:
    """Compute one new file's features and serve them online now, without a rebuild.

    The file gets the snapshot a `build` of it would get (same kernel, gates and participants
    parsing), and only its rows are written to Redis (Feast push); a later `build` of the same
    file adds nothing. Needs `eegfs features apply` first. Exit status as for `build`: 0 all
    served, 3 rows held back by a gate, 1 failed.

    \b
    Example:
      eegfs features push --input new_subject.h5 --participants data/demo/participants.tsv
    """
    from eegfs.commands import parse_layout
    from featurestore.push import push_file
    from pipelines.build import BuildOptions

    options = BuildOptions(
        layout=parse_layout(layout, mapping),
        sfreq=sfreq,
        progress=not no_progress,
        accept_failing=accept_failing,
        lenient_participants=lenient,
    )
    settings: Settings = ctx.obj
    result = push_file(settings, input_path, participants_path=participants, options=options)
    click.echo(result.summary(settings.redis_url))
    _print_rejected(result.build.to_report())
    if result.held_back:
        ctx.exit(EXIT_ROWS_REJECTED)


@features.command()
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.pass_obj
def quality(settings: Settings, as_json: bool) -> None:
    """Show the data-quality report of the last `eegfs features build`.

    Lists each input (snapshot, subjects served and held back, file-level failures) and every
    subject that failed a gate: the gates and what was found, and whether its rows are held
    back or were accepted (--accept-failing). Gate definitions: docs/features.md.
    """
    from pipelines.quality_report import load_report

    document = load_report(settings.features_dir)
    if as_json:
        click.echo(json.dumps(document, indent=1))
        return
    _print_inputs(document)
    _print_rejected(document)


def _print_inputs(document: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    click.echo(
        f"last build: {document['finished_at']}  held back: {document['n_held_back']} "
        f"subject(s), accepted despite failing: {document['n_accepted']}"
        f"{'  (--accept-failing)' if document['accept_failing'] else ''}"
    )
    table = Table("input", "challenge", "status", "snapshot", "subjects", "served", "held back")
    for item in document["inputs"]:
        q = item.get("quality") or {}
        table.add_row(
            escape(Path(item["path"]).name),
            cell(item.get("challenge")),
            item["status"] + (" (re-evaluated)" if q.get("reevaluated") else ""),
            item["snapshot_id"],
            cell(q.get("n_subjects", item.get("n_subjects"))),
            cell(q.get("n_promoted", item.get("n_subjects"))),
            cell(q.get("n_held_back", 0)),
        )
    console().print(table)


def _print_rejected(document: dict) -> None:
    """The participants rows skipped (stderr) and a table of the subjects that failed a gate."""
    from rich.markup import escape
    from rich.table import Table

    from pipelines.quality_report import rejected_rows

    skipped = document.get("participants_skipped") or []
    if skipped:
        listed = "; ".join(f"line {p['line']}: {p['reason']}" for p in skipped)
        click.echo(
            f"warning: {document['participants']['path']}: skipped {len(skipped)} bad row(s) "
            f"(--lenient): {listed}",
            err=True,
        )
    rows = rejected_rows(document)
    if not rows:
        return
    table = Table(
        "subject",
        "challenge",
        "input",
        "decision",
        "good fraction",
        "power uV^2",
        "reasons",
        title="subjects that failed a data-quality gate",
    )
    for r in rows:
        decision = "held back" if not r["promoted"] else "accepted" if r["reasons"] else "served"
        table.add_row(
            escape(r["subject_id"]),
            cell(r["challenge"]),
            escape(Path(r["path"]).name),
            decision,
            cell(r["good_fraction"]),
            cell(r["total_power_uv2"]),
            escape("\n".join(r["reasons"]) or "passes now"),
        )
    console().print(table)


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
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Print a row of nulls for a subject the online store does not hold (default: exit 1).",
)
@click.pass_obj
def get(settings: Settings, subjects, services, allow_missing: bool) -> None:
    """Print a subject's online features from Redis as JSON (missing values are null).

    A subject that a service holds no value for is an error (exit 1) unless --allow-missing;
    a malformed id exits 2.

    \b
    Example (the first subject of the demo data):
      eegfs features get --subject "$(sed -n 2p data/demo/participants.tsv | cut -f1)"
    """
    from featurestore.commands import online_features_record

    records = online_features_record(
        settings, list(subjects), list(services) or None, allow_missing=allow_missing
    )
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
