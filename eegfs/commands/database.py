"""``eegfs migrate-sqlite``, ``backup`` and ``restore``: commands on the whole tracking database."""

from __future__ import annotations

from pathlib import Path

import click

from eegfs.commands import console
from services.settings import Settings


@click.command("migrate-sqlite")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Read and map everything, print the counts, write nothing."
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA timezone the file's naive timestamps were written in (recorded).",
)
@click.pass_obj
def migrate_sqlite_command(settings: Settings, path: Path, dry_run: bool, timezone: str) -> None:
    """Migrate an EEG2025 SQLite run log (eeg2025_metadata.db) into MongoDB; safe to rerun."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.migrate import migrate_sqlite

    with open_database(settings, indexes=not dry_run) as db:
        report = migrate_sqlite(db, path, dry_run=dry_run, timezone=timezone)
    verb = "would insert" if dry_run else "inserted"
    table = Table(
        "table",
        "collection",
        "rows",
        verb,
        "already there",
        "skipped",
        title=f"{path.name} (sha256 {report.sha256[:12]}){' - dry run' if dry_run else ''}",
    )
    for t in report.tables.values():
        table.add_row(
            t.table, t.target, str(t.rows), str(t.inserted), str(t.existing), str(t.skipped)
        )
    out = console()
    out.print(table)
    for note in report.notes:
        out.print(f"- {note}")


@click.command("backup")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup_command(settings: Settings, directory: Path) -> None:
    """Write every collection and GridFS file to DIRECTORY (new or empty), no mongodump needed."""
    from tracking.backup import backup_database
    from tracking.database import open_database

    with open_database(settings, indexes=False) as db:
        report = backup_database(db, directory, progress=True)
    click.echo(
        f"{sum(report.collections.values())} document(s) in {len(report.collections)} collection(s), "
        f"{report.gridfs_files} GridFS file(s) ({report.gridfs_bytes} bytes) -> {report.directory}"
    )


@click.command("restore")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--drop", is_flag=True, help="Drop each backed-up collection first (exact copy).")
@click.pass_obj
def restore_command(settings: Settings, directory: Path, drop: bool) -> None:
    """Restore a backup made by `eegfs backup` into MONGO_DB (checksums verified first)."""
    from tracking.backup import restore_database
    from tracking.database import open_database

    with open_database(settings, indexes=False) as db:
        report = restore_database(db, directory, drop=drop, progress=True)
    click.echo(
        f"restored {sum(report.collections.values())} document(s) in {len(report.collections)} "
        f"collection(s) and {report.gridfs_files} GridFS file(s) into {report.database}"
    )


def register(cli: click.Group) -> None:
    cli.add_command(migrate_sqlite_command)
    cli.add_command(backup_command)
    cli.add_command(restore_command)


__all__ = ["backup_command", "migrate_sqlite_command", "register", "restore_command"]
