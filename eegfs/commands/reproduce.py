"""``eegfs runs reproduce``: train a recorded run again from its record and compare its metrics."""

from __future__ import annotations

import click

from services.settings import Settings


@click.command("reproduce")
@click.argument("experiment_id")
@click.option("--epochs", type=int, default=None, help="Train and compare only the first N epochs.")
@click.option(
    "--allow-modified",
    is_flag=True,
    help="Go on when the run's feature snapshot files fail their checksums; the metrics "
    "difference is reported.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.pass_obj
def reproduce(
    settings: Settings, experiment_id: str, epochs: int | None, allow_modified: bool, no_progress
) -> None:
    """Rebuild run EXPERIMENT_ID from its record (config, seed, features from the offline
    snapshots it read, checksums verified), train it again with the current code and compare
    every recorded epoch metric. The outcome is stored in the run's ``reproductions``.

    \b
    Example:
      eegfs runs reproduce 665f1c2e9b1e4a0d2c3b4a59 --epochs 2
    """
    from services.memory import retain_freed_memory
    from training.reproduce import format_reproduction
    from training.reproduce import reproduce as run_reproduce

    retain_freed_memory()  # as `eegfs train` does: the same speed, the same numbers
    result = run_reproduce(
        settings,
        experiment_id,
        epochs=epochs,
        allow_modified=allow_modified,
        progress=not no_progress,
        echo=click.echo,
    )
    click.echo(format_reproduction(result))


__all__ = ["reproduce"]
