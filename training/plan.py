"""What a call of :func:`training.train` will do, decided before anything is recorded.

:func:`plan_run` resolves a fresh run (its validated config, with the historical ``as_of`` fixed
to the start time) or a resumed one (the stored config with the allowed overrides, and the
latest checkpoint fetched, checksum-verified and loaded), so a bad option, an unknown experiment
or an unreadable checkpoint fails before a run is created or a stopped one set running again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from training.checkpoints import Checkpoint, checkpoint_dir, load_checkpoint
from training.config import TrainConfig
from training.errors import CheckpointError


@dataclass(frozen=True)
class RunPlan:
    """A run to start (``checkpoint`` None) or to continue from ``checkpoint``.

    Attributes
    ----------
    config : TrainConfig
        Validated; for a resume, the stored config with the overrides applied.
    resume_id : str or None
        The experiment to continue.
    checkpoint : Checkpoint or None
        Its latest checkpoint, loaded.
    checkpoint_path : Path or None
        The local file it was loaded from.
    """

    config: TrainConfig
    resume_id: str | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_path: Path | None = None

    @property
    def resumed(self) -> bool:
        """True when this plan continues an existing experiment."""
        return self.checkpoint is not None


def plan_run(
    settings,
    tracker,
    config: TrainConfig | None = None,
    *,
    resume: str | None = None,
    overrides: Mapping | None = None,
) -> RunPlan:
    """The plan of a fresh run (``config``) or of a resumed one (``resume``).

    Parameters
    ----------
    settings : Settings
        ``data_dir`` locates the checkpoints.
    tracker : tracking.Tracker
        Reads the stored run and fetches its checkpoint (nothing is written).
    config : TrainConfig, optional
        The fresh run's configuration (ignored when resuming).
    resume : str, optional
        Experiment id to continue from its latest checkpoint.
    overrides : mapping, optional
        With ``resume``: new values of :data:`training.config.RESUME_OVERRIDABLE` fields.

    Raises
    ------
    ValueError
        No config and no resume, overrides without resume, or a bad option.
    CheckpointError
        The experiment was not started by ``eegfs train``, has no checkpoint, or its checkpoint
        cannot be read.
    tracking.TrackingError
        Unknown experiment, or the checkpoint file is missing or fails its checksum.
    """
    if resume is not None:
        return _plan_resume(settings, tracker, resume, overrides)
    if config is None:
        raise ValueError("train() needs a TrainConfig (or resume=EXPERIMENT_ID)")
    if overrides:
        raise ValueError(f"overrides {sorted(overrides)} only apply when resuming a run")
    config.validate()
    return RunPlan(config=config.with_resolved_as_of(datetime.now(UTC)))


def _plan_resume(settings, tracker, resume: str, overrides: Mapping | None) -> RunPlan:
    doc = tracker.get_run(resume)
    experiment_id = str(doc["_id"])
    stored = (doc.get("config") or {}).get("train")
    if not stored:
        raise CheckpointError(
            f"experiment {experiment_id} was not started by eegfs train (no config.train); "
            "it cannot be resumed here"
        )
    config = TrainConfig.from_dict(stored).with_resume_overrides(overrides)
    checkpoints = tracker.run_history(experiment_id)["checkpoints"]  # by epoch, then time
    if not checkpoints:
        raise CheckpointError(
            f"experiment {experiment_id} has no checkpoint to resume from (it stopped before the "
            "end of its first epoch); start a new run instead"
        )
    path = tracker.fetch_checkpoint(
        checkpoints[-1], checkpoint_dir(settings.data_dir, experiment_id)
    )
    checkpoint = load_checkpoint(path)
    if checkpoint.experiment_id != experiment_id:
        raise CheckpointError(
            f"{path}: belongs to experiment {checkpoint.experiment_id}, not {experiment_id}; the "
            "checkpoint record points at another run's file"
        )
    return RunPlan(
        config=config, resume_id=experiment_id, checkpoint=checkpoint, checkpoint_path=path
    )


__all__ = ["RunPlan", "plan_run"]
