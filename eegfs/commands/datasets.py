"""``eegfs datasets``: catalogue HDF5 window files (register, list)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from eegfs.commands import console, layout_options, parse_layout
from eegfs.commands.display import cell
from services.settings import Settings


@click.group()
def datasets() -> None:
    """Catalogue of HDF5 window files (path, release, challenge, shape, sha256)."""


def _dataset_record(path: Path, layout, sfreq: float | None, features_dir: Path) -> dict[str, Any]:
    """Catalogue fields of one HDF5 window file, read with the feature build's reader, and what
    the feature store's quality gates decided about it (``quality``, when it was built)."""
    from pipelines.hdf5_io import open_windows
    from pipelines.quality_report import dataset_quality
    from services.files import sha256_file

    with open_windows(path, layout=layout, sfreq=sfreq) as w:
        dset = w.dataset
        attrs = dict(dset.file.attrs)
        record = {
            "path": str(Path(path).resolve()),
            "challenge": w.layout.challenge,
            "layout": w.layout.name,
            "dataset": w.layout.data,
            "release": w.release or None,
            "task": attrs.get("task"),
            "windows": w.n_windows,
            "channels": w.n_channels,
            "samples": w.n_times,
            "sfreq": w.sfreq,
            "window_s": w.n_times / w.sfreq,
            "n_subjects": len(set(w.subject_ids)),
            "dtype": str(dset.dtype),
            "compression": dset.compression,
            "size_bytes": Path(path).stat().st_size,
            "attrs": attrs,
            "warnings": [],
        }
    record["sha256"] = sha256_file(path)
    quality = dataset_quality(features_dir, record["sha256"])
    if quality is not None:
        record["quality"] = quality
    return record


@datasets.command("register")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@layout_options
@click.pass_obj
def datasets_register(settings: Settings, files, layout, mapping, sfreq) -> None:
    """Record HDF5 FILES with their metadata and sha256 (idempotent: keyed by content).

    Files are opened and validated exactly as `eegfs features build` does (same --layout, --map
    and --sfreq options); every file is read and hashed before anything is written. A file the
    feature store has built also gets its data-quality outcome (subjects served, held back and
    why) from $EEGFS_DATA_DIR/features/manifest.json.

    \b
    Example:
      eegfs datasets register data/demo/*.h5
    """
    from tracking.database import open_database
    from tracking.datasets import record_datasets

    lay = parse_layout(layout, mapping)
    paths = list(files)
    if len(paths) > 1:
        from tqdm import tqdm

        paths = tqdm(paths, desc="reading and hashing", unit="file")
    records = [_dataset_record(path, lay, sfreq, settings.features_dir) for path in paths]
    with open_database(settings) as db:
        docs = record_datasets(db, records)
    for d in docs:
        click.echo(
            f"{d['path']}: challenge {d['challenge']} release {d.get('release')} "
            f"{d['windows']}x{d['channels']}x{d['samples']} @ {d.get('sfreq')} Hz  sha256 {d['sha256'][:16]}"
        )
        quality = d.get("quality")
        if quality:
            click.echo(
                f"  features {quality['snapshot_id']}: {quality['n_promoted']} subject(s) served, "
                f"{quality['n_held_back']} held back by the quality gates"
            )
        for warning in d.get("warnings") or []:
            click.echo(f"  warning: {warning}")


@datasets.command("list")
@click.pass_obj
def datasets_list(settings: Settings) -> None:
    """Catalogued HDF5 files."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.datasets import list_datasets

    with open_database(settings) as db:
        docs = list_datasets(db)
    table = Table(
        "challenge", "release", "windows", "channels", "samples", "sfreq", "sha256", "path"
    )
    for d in docs:
        table.add_row(
            cell(d.get("challenge")),
            cell(d.get("release")),
            cell(d.get("windows")),
            cell(d.get("channels")),
            cell(d.get("samples")),
            cell(d.get("sfreq")),
            (d.get("sha256") or "-")[:16],
            d.get("path") or "-",
        )
    console().print(table)


def register(cli: click.Group) -> None:
    cli.add_command(datasets)


__all__ = ["datasets", "register"]
