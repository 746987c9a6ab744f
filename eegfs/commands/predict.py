"""``eegfs predict``: a registered model's predictions for one HDF5 file (Parquet + MongoDB)."""

from __future__ import annotations

from pathlib import Path

import click

from services.settings import Settings


@click.command("predict", context_settings={"show_default": True})
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="Registered model: NAME (latest version), NAME@ALIAS or NAME:VERSION.",
)
@click.option(
    "--data", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HDF5 file."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Windows Parquet file (the subject table goes beside it as PATH.subjects.parquet); "
    "default <data dir>/predictions/<file>.<model>-v<N>.parquet.",
)
@click.option("--device", default="cpu", help="cpu, cuda, cuda:N or auto.")
@click.option("--batch-size", type=int, default=256, help="Windows per inference batch.")
@click.option("--workers", type=int, default=0, help="Loader worker processes (0: main process).")
@click.option(
    "--no-push",
    is_flag=True,
    help="Never push the file: subjects in neither the snapshot nor the online store are "
    "predicted without features (per the model's missing-feature policy).",
)
@click.pass_obj
def predict(
    settings: Settings, model_spec, data, out, device, batch_size, workers, no_push
) -> None:
    """Predict every window of FILE.h5 and each subject (mean over its windows) with a
    registered model, using the inputs it was trained with; recorded in MongoDB.

    \b
    Example:
      eegfs predict --model demo-c2@production --data data/demo/challenge2_R2.h5
    """
    from services.memory import retain_freed_memory
    from training.predict import format_prediction, predict_file
    from training.prepare import resolve_device

    if batch_size < 1 or workers < 0:
        raise click.UsageError("--batch-size must be >= 1 and --workers >= 0")
    retain_freed_memory()  # batches reuse freed memory instead of faulting in new pages
    result = predict_file(
        settings,
        model_spec,
        data,
        out=out,
        device=str(resolve_device(device)),
        batch_size=batch_size,
        workers=workers,
        push=not no_push,
        echo=click.echo,
    )
    click.echo(format_prediction(result))


def register(cli: click.Group) -> None:
    cli.add_command(predict)


__all__ = ["predict", "register"]
