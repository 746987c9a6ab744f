"""The checkpoint of a training run: what is saved, the atomic save and the verified load.

A checkpoint is one ``torch.save`` file, ``<data_dir>/checkpoints/<experiment_id>/epoch_NNNN.pt``,
holding a dict of tensors and plain Python values only (so ``torch.load(weights_only=True)``
reads it: no pickled code): the format number, the experiment id and epoch, the model's
description and state, the optimiser, scheduler and torch RNG states, the loop state (next
epoch, step counter, best metric, history), the channel statistics, feature scaler and feature
columns, the target mean/std, the validation subjects, the run's config and the epoch's metrics.
:class:`Checkpoint` is that content with typed fields; :func:`save_checkpoint` writes it
atomically and :func:`load_checkpoint` reads it back, checking the format and every field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from training.errors import CheckpointError
from training.features import FeatureScaler
from training.loop import LoopState, TargetScale
from training.normalization import ChannelStats

#: Bumped whenever the content below changes incompatibly; older files are refused.
CHECKPOINT_FORMAT = 1

#: Payload keys and the Python types their values must have (None allowed where listed).
_FIELDS: dict[str, tuple[type, ...]] = {
    "experiment_id": (str,),
    "epoch": (int,),
    "model": (dict,),
    "model_state": (dict,),
    "optimizer_state": (dict,),
    "scheduler_state": (dict,),
    "loop_state": (dict,),
    "torch_rng_state": (torch.Tensor,),
    "channel_stats": (dict, type(None)),
    "feature_scaler": (dict, type(None)),
    "feature_columns": (list, type(None)),
    "target_scale": (dict,),
    "val_subjects": (list,),
    "config": (dict,),
    "metrics": (dict,),
}


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to continue a run after ``epoch`` (or to use its model)."""

    experiment_id: str
    epoch: int
    model_info: dict
    model_state: dict
    optimizer_state: dict
    scheduler_state: dict
    loop_state: LoopState
    torch_rng_state: torch.Tensor
    channel_stats: ChannelStats | None
    feature_scaler: FeatureScaler | None
    feature_columns: list[str] | None
    target_scale: TargetScale
    val_subjects: list[str]
    config: dict
    metrics: dict[str, float]

    def to_payload(self) -> dict:
        """The dict that is saved: tensors, dicts, lists, str, int, float and None only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "experiment_id": self.experiment_id,
            "epoch": int(self.epoch),
            "model": self.model_info,
            "model_state": self.model_state,
            "optimizer_state": self.optimizer_state,
            "scheduler_state": self.scheduler_state,
            "loop_state": self.loop_state.to_dict(),
            "torch_rng_state": self.torch_rng_state,
            "channel_stats": None if self.channel_stats is None else self.channel_stats.to_dict(),
            "feature_scaler": None
            if self.feature_scaler is None
            else self.feature_scaler.to_dict(),
            "feature_columns": self.feature_columns,
            "target_scale": {"mean": self.target_scale.mean, "std": self.target_scale.std},
            "val_subjects": list(self.val_subjects),
            "config": self.config,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
        }

    @classmethod
    def from_payload(cls, payload: Mapping, source: str = "checkpoint") -> Checkpoint:
        """The checkpoint in ``payload`` (as loaded); ``source`` names it in errors.

        Raises
        ------
        CheckpointError
            Another format, a missing field or a field of the wrong type.
        """
        _check_payload(payload, source)
        try:
            return cls(
                experiment_id=payload["experiment_id"],
                epoch=payload["epoch"],
                model_info=payload["model"],
                model_state=payload["model_state"],
                optimizer_state=payload["optimizer_state"],
                scheduler_state=payload["scheduler_state"],
                loop_state=LoopState.from_dict(payload["loop_state"]),
                torch_rng_state=payload["torch_rng_state"],
                channel_stats=_optional(ChannelStats.from_dict, payload["channel_stats"]),
                feature_scaler=_optional(FeatureScaler.from_dict, payload["feature_scaler"]),
                feature_columns=payload["feature_columns"],
                target_scale=TargetScale(**payload["target_scale"]),
                val_subjects=list(payload["val_subjects"]),
                config=payload["config"],
                metrics=payload["metrics"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{source}: a field of the checkpoint is malformed ({type(exc).__name__}: {exc}); "
                "it was not written by this version of eegfs train, start a new run"
            ) from exc


def _optional(parse, value):
    return None if value is None else parse(value)


def _check_payload(payload: Mapping, source: str) -> None:
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{source}: holds a {type(payload).__name__}, expected a training checkpoint (a dict)"
        )
    found = payload.get("format")
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source}: checkpoint format {found!r}, expected {CHECKPOINT_FORMAT}; it was not "
            "written by this version of eegfs train"
        )
    missing = sorted(set(_FIELDS) - set(payload))
    if missing:
        raise CheckpointError(
            f"{source}: checkpoint lacks {missing}; the file is incomplete or not from eegfs train"
        )
    wrong = {
        key: type(payload[key]).__name__
        for key, kinds in _FIELDS.items()
        if not isinstance(payload[key], kinds)
    }
    if wrong:
        raise CheckpointError(
            f"{source}: checkpoint fields of unexpected types {wrong}; expected "
            f"{ {k: [t.__name__ for t in _FIELDS[k]] for k in wrong} }"
        )


def checkpoint_dir(data_dir: str | os.PathLike[str], experiment_id: str) -> Path:
    """``data_dir/checkpoints/<experiment_id>``: where a run's checkpoints are written."""
    return Path(data_dir) / "checkpoints" / str(experiment_id)


def checkpoint_file(directory: str | os.PathLike[str], epoch: int) -> Path:
    """``directory/epoch_NNNN.pt``: where the checkpoint of ``epoch`` is written."""
    return Path(directory) / f"epoch_{int(epoch):04d}.pt"


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename)."""
    from services.files import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint.to_payload(), f)
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({exc}); check the space and permissions of "
            f"{path.parent}"
        ) from exc
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``.

    Raises
    ------
    CheckpointError
        The file is unreadable, holds anything but plain tensors and containers (no pickled code
        is ever run), or is not a complete checkpoint of this format.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({exc})") from exc
    return Checkpoint.from_payload(payload, str(path))


__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "checkpoint_dir",
    "checkpoint_file",
    "load_checkpoint",
    "save_checkpoint",
]
