"""``eegfs``: the one console script. Each subcommand parses arguments and calls one library
function; heavy imports happen inside the commands so ``eegfs --help`` stays fast.

Command groups live in ``eegfs/commands/<group>.py`` and are attached at the bottom of this file.
Errors are turned into exits in one place, :class:`eegfs.errors.HandledGroup` (the root group):
commands never catch library errors themselves.
"""

from __future__ import annotations

import logging

import click

from eegfs.errors import HandledGroup
from services.settings import load_settings


@click.group(
    cls=HandledGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level for library messages.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """EEG feature store and experiment platform.

    \b
    Typical session on a fresh machine:
      eegfs services up                       start Redis / MongoDB here if none is configured
      eegfs demo-data --out data/demo         write EEG2025-like demo HDF5 files
      eegfs features build --input data/demo/*.h5 --participants data/demo/participants.tsv
      eegfs features apply && eegfs features materialize
      eegfs features get --subject NDARxxxxxxxx   (an id from data/demo/participants.tsv)
      eegfs train --challenge 2 --data data/demo/challenge2_R*.h5
      eegfs runs list
      eegfs models register NAME CHECKPOINT_ID --alias production
      eegfs predict --model NAME@production --data data/demo/challenge2_R2.h5

    Settings come from the environment or a .env file: REDIS_URL, MONGO_URI, MONGO_DB,
    EEGFS_DATA_DIR (default data/), EEGFS_FEATURE_REPO (default feature_repo/),
    EEGFS_REDIS_PORT / EEGFS_MONGO_PORT (ports of the default and local servers).
    Run `eegfs doctor` when something does not work.
    """
    _route_logging(log_level.upper())
    ctx.obj = load_settings()
    if ctx.obj.job is not None:
        # Started by `eegfs worker` to run a job: link runs to the job, fence their completion.
        from jobs.child import install_job_hooks

        install_job_hooks(ctx.obj)


def _route_logging(level: str) -> None:
    """Log at ``level`` on stderr; library warnings (FutureWarning, DeprecationWarning... from
    pandas, dask, Feast) go to the log as records of ``py.warnings`` shown only from INFO down.
    The one place where warnings are routed."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    shown = logging.getLevelName(level) <= logging.INFO
    logging.getLogger("py.warnings").setLevel(logging.WARNING if shown else logging.ERROR)


def main() -> None:
    cli(prog_name="eegfs")


# --- command groups (one module each) -----------------------------------------------------------
from eegfs.commands import (  # noqa: E402
    dashboard,
    database,
    datasets,
    demo,
    features,
    jobs,
    models,
    predict,
    runs,
    services,
    subjects,
    sweep,
    train,
)

for _group in (
    services,
    demo,
    features,
    runs,
    models,
    predict,
    subjects,
    datasets,
    database,
    train,
    jobs,
    sweep,
    dashboard,
):
    _group.register(cli)
