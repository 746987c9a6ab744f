"""``eegfs train``: one training run (or a resumed one), recorded in MongoDB, live on Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from services.settings import Settings

if TYPE_CHECKING:
    from training.config import TrainConfig


@click.command(context_settings={"show_default": True})
@click.option(
    "--challenge",
    type=click.Choice(["1", "2"]),
    default=None,
    help="EEG2025 challenge: 1 = response time (MSE), 2 = externalizing/p_factor (L1). "
    "Required unless --resume.",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="HDF5 window files (either layout); more files may follow as arguments, so "
    "--data data/demo/challenge2_R*.h5 works.",
)
@click.argument("more_data", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--epochs", type=int, default=8, help="Epochs in total (with --resume: train up to this many)."
)
@click.option("--batch-size", type=int, default=32)
@click.option(
    "--workers",
    type=int,
    default=2,
    help="DataLoader worker processes (HDF5 reads and feature lookups); 0 = main process.",
)
@click.option("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when available).")
@click.option(
    "--model",
    type=click.Choice(["cnn", "eegnex"]),
    default="cnn",
    help="cnn: compact 1-D CNN with a feature-fusion head; eegnex: EEGNeX (Chen et al. 2024).",
)
@click.option(
    "--features",
    type=click.Choice(["online", "historical", "none"]),
    default="online",
    help="Subject features: per-batch online lookups (Redis), a historical frame as of "
    "--as-of (reproducible), or none.",
)
@click.option(
    "--as-of",
    default=None,
    help="ISO 8601 time of the historical frame (default: the run's start time).",
)
@click.option(
    "--feature-set",
    type=click.Choice(["summary", "all"]),
    default="summary",
    help="summary: scalar features; all: also per-channel relative band powers.",
)
@click.option(
    "--missing-features",
    type=click.Choice(["impute", "fail"]),
    default="impute",
    help="impute: training mean + availability mask; fail: stop naming subjects the "
    "store does not know.",
)
@click.option(
    "--cache-size",
    type=int,
    default=4096,
    help="Rows of the feature client's in-process cache per worker (0 = off).",
)
@click.option(
    "--val-release",
    default=None,
    help="Hold out a whole release for validation (e.g. R2) instead of a seeded subject split.",
)
@click.option("--val-fraction", type=float, default=0.2, help="Share of subjects in validation.")
@click.option("--seed", type=int, default=0, help="Seed of the split, crops, order and weights.")
@click.option(
    "--target",
    default=None,
    help="Label to predict: externalizing (default) or p_factor for Challenge 2 files, "
    "response_time for Challenge 1 files.",
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Learning rate (default: the challenge's, 0.002 Adamax for C2, 0.001 AdamW for C1).",
)
@click.option("--no-normalize", is_flag=True, help="Skip per-channel normalisation.")
@click.option("--log-every", type=int, default=10, help="Step metrics every N batches.")
@click.option(
    "--upload-checkpoints",
    is_flag=True,
    help="Also store checkpoints in GridFS (so another machine can resume).",
)
@click.option(
    "--name", default=None, help="Run name (default: c<challenge>-<model>-<features>-s<seed>)."
)
@click.option("--tag", "tags", multiple=True, help="Tag for the run (repeatable).")
@click.option("--notes", default="", help="Free text stored with the run.")
@click.option(
    "--resume",
    "resume",
    default=None,
    metavar="EXPERIMENT_ID",
    help="Continue this experiment from its latest checkpoint at the next epoch.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option(
    "--skip-if-done",
    is_flag=True,
    help="Train only if no run with the same config, code commit (clean tree) and feature "
    "snapshot is completed or being trained; otherwise print that run's id. Of several "
    "started together, exactly one trains.",
)
@click.pass_context
def train(ctx: click.Context, **opts) -> None:
    """Train a model on EEG windows with subject features from the feature store.

    \b
    Examples:
      eegfs train --challenge 2 --data data/demo/challenge2_R*.h5
      eegfs train --challenge 2 --data data/demo/challenge2_R*.h5 --val-release R2 --model eegnex
      eegfs train --challenge 2 --data data/demo/challenge2_R*.h5 --features historical \\
                  --as-of 2025-06-01T00:00:00+00:00
      eegfs train --resume 665f1c2e9b1e4a0d2c3b4a59 --epochs 12

    The run is recorded in MongoDB (eegfs runs show ID), streams live metrics to Redis channel
    training:<ID>, and writes checkpoints under <data_dir>/checkpoints/<ID>/. At the end it
    prints the experiment id, the best epoch, the validation NRMSE against a mean predictor and
    the best checkpoint.
    """
    from services.memory import retain_freed_memory
    from training.results import format_outcome
    from training.runner import train as run_training

    settings: Settings = ctx.obj
    retain_freed_memory()  # batches reuse freed memory instead of faulting in new pages
    data = tuple(opts["data"]) + tuple(opts["more_data"])
    progress = not opts["no_progress"]
    if opts["resume"]:
        overrides = _resume_overrides(ctx, opts, data)
        result = run_training(
            settings, resume=opts["resume"], overrides=overrides, progress=progress, echo=click.echo
        )
    else:
        result = run_training(
            settings,
            _config(opts, data),
            progress=progress,
            echo=click.echo,
            skip_if_done=opts["skip_if_done"],
        )
    click.echo(format_outcome(result))


def _resume_overrides(ctx: click.Context, opts: dict, data: tuple[str, ...]) -> dict:
    """The options given on the command line that a resume may change."""
    from training.config import RESUME_OVERRIDABLE

    if opts["challenge"] or data:
        allowed = ", ".join("--" + name.replace("_", "-") for name in RESUME_OVERRIDABLE)
        raise click.UsageError(
            "--resume continues a run with its recorded data and settings; drop "
            f"--challenge/--data (only {allowed} may change)"
        )
    return {
        name: opts[name]
        for name in RESUME_OVERRIDABLE
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }


def _config(opts: dict, data: tuple[str, ...]) -> TrainConfig:
    """The TrainConfig of the options (each field is the option of the same name; ``normalize``
    is ``--no-normalize`` negated and ``tags`` the repeated ``--tag``)."""
    import dataclasses

    from training.config import TrainConfig

    if not opts["challenge"] or not data:
        raise click.UsageError("--challenge and --data are required (or --resume ID)")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {name: value for name, value in opts.items() if name in fields}
    values.update(
        challenge=int(opts["challenge"]),
        data=data,
        normalize=not opts["no_normalize"],
        tags=tuple(opts["tags"]),
    )
    return TrainConfig(**values)


def register(cli: click.Group) -> None:
    cli.add_command(train)


__all__ = ["register"]
