"""``eegfs subjects``: sync subject documents from participants.tsv and feature summaries; show one."""

from __future__ import annotations

from pathlib import Path

import click

from eegfs.commands.display import dumps_json
from services.settings import Settings


@click.group()
def subjects() -> None:
    """EEG2025 subject documents (demographics, releases, quality, annotations)."""


@subjects.command("sync")
@click.option(
    "--participants",
    "participants",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="BIDS participants.tsv (repeatable) [default: <data>/demo/participants.tsv if present].",
)
@click.option(
    "--features-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature tables root with subject_features/ [default: <EEGFS_DATA_DIR>/features].",
)
@click.option(
    "--lenient",
    is_flag=True,
    help="Skip bad participants.tsv rows (listed in a warning) instead of failing.",
)
@click.pass_obj
def subjects_sync(settings: Settings, participants, features_dir, lenient) -> None:
    """Upsert subjects from participants.tsv and the feature pipeline's per-subject summaries.

    The files are read with the feature build's strict parser (pipelines.participants): n/a,
    N/A, NA and empty cells are missing; a row with the wrong number of fields, an id that is
    not sub-<letters and digits>, a sex outside M/F/O (male/female/other) or a subject listed
    twice with different values is an error naming the line (--lenient skips such rows).
    """
    from pipelines.participants import load_participants
    from tracking.database import open_database
    from tracking.subjects import sync_subjects

    if not participants and (settings.demo_dir / "participants.tsv").is_file():
        participants = (settings.demo_dir / "participants.tsv",)
    loaded = [load_participants(p, extra_columns=True, lenient=lenient) for p in participants]
    for file in loaded:
        if file.warning():
            click.echo(f"warning: {file.warning()}", err=True)
    rows = {file.path.resolve(): file.frame for file in loaded}
    with open_database(settings) as db:
        report = sync_subjects(db, rows, features_dir or settings.features_dir)
    click.echo(
        f"{report.subjects} subject(s): {report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged ({report.participant_rows} participants row(s) from "
        f"{len(report.participants_files)} file(s), {report.feature_rows} feature summary row(s))"
    )
    for message in report.messages:
        click.echo(message)


@subjects.command("show")
@click.argument("subject_id")
@click.pass_obj
def subjects_show(settings: Settings, subject_id: str) -> None:
    """One subject document as JSON (sub-NDAR... or NDAR...)."""
    from tracking.database import open_database
    from tracking.subjects import get_subject

    with open_database(settings) as db:
        click.echo(dumps_json(get_subject(db, subject_id)))


def register(cli: click.Group) -> None:
    cli.add_command(subjects)


__all__ = ["register", "subjects"]
