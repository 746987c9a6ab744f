"""``eegfs demo-data``: write synthetic EEG2025-like HDF5 files and a participants.tsv."""

from __future__ import annotations

from pathlib import Path

import click

from services.settings import Settings


@click.command("demo-data")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory.  [default: <EEGFS_DATA_DIR>/demo, i.e. data/demo]",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Root seed; the same seed and options give byte-identical files.",
)
@click.option(
    "--subjects-per-release",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="Subjects in each release (R1, R2).",
)
@click.option(
    "--c2-windows",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Challenge 2 windows (4 s, 129 x 400) per subject.",
)
@click.option(
    "--c1-windows",
    type=click.IntRange(min=1),
    default=24,
    show_default=True,
    help="Challenge 1 windows (2 s, 129 x 200) per subject.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_obj
def demo_data(
    settings: Settings,
    out_dir: Path | None,
    seed: int,
    subjects_per_release: int,
    c2_windows: int,
    c1_windows: int,
    no_progress: bool,
) -> None:
    """Write SYNTHETIC EEG2025-like demo data (not recordings).

    \b
    Writes, for releases R1 and R2:
      challenge2_R*.h5   data (N,129,400) float32 V, targets (externalizing), subjects, p_factors
      challenge1_R*.h5   eeg (N,129,200) float32 V, labels (response time, s), subject_ids
      participants.tsv   BIDS: participant_id, release_number, sex, age, ehq_total,
                         p_factor, attention, internalizing, externalizing (some n/a)
    Files are replaced atomically; see docs/demo_data.md for how the signal is made.

    \b
    Example:
      eegfs demo-data --out data/demo --seed 0
    """
    from demodata.writer import write_demo_data

    out = out_dir if out_dir is not None else settings.demo_dir
    result = write_demo_data(
        out,
        seed=seed,
        subjects_per_release=subjects_per_release,
        c2_windows_per_subject=c2_windows,
        c1_windows_per_subject=c1_windows,
        progress=not no_progress,
    )

    total = 0
    click.echo(f"demo data (synthetic, seed {seed}) in {result.out_dir}:")
    for paths, n_win in ((result.challenge2, c2_windows), (result.challenge1, c1_windows)):
        for release, path in paths.items():
            size = path.stat().st_size
            total += size
            n_subj = len(result.subjects[release])
            click.echo(
                f"  {path.name:22s} {n_subj * n_win:6d} windows  {n_subj:3d} subjects  "
                f"{size / 1e6:8.1f} MB"
            )
    size = result.participants.stat().st_size
    total += size
    n_rows = sum(len(v) for v in result.subjects.values())
    click.echo(
        f"  {result.participants.name:22s} {n_rows:6d} rows     {'':12s} {size / 1e6:8.1f} MB"
    )
    click.echo(f"  total {total / 1e6:.1f} MB")


def register(cli: click.Group) -> None:
    """Attach ``demo-data`` to the root group."""
    cli.add_command(demo_data)
