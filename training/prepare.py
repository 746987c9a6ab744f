"""The parts of a run, built from its config (and restored from a checkpoint when resuming).

Three steps, each a function: :func:`prepare_data` (window index, subject split, crop, channel
statistics and target scale from training windows only, the two datasets),
:func:`prepare_features` (the feature source and its scaler, the collate function) and
:func:`prepare_model` (model, optimiser, cosine schedule, loop state). With a checkpoint, the
statistics, scalers and states come from it instead, after checking that the data and feature
columns are still the ones the run started with.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.challenges import ChallengeConfig
from training.checkpoints import Checkpoint
from training.config import TrainConfig, parse_as_of
from training.data import EpochSampler, WindowDataset, compute_channel_stats, worker_init_fn
from training.errors import CheckpointError, DataError, TrainingError
from training.features import BatchCollate, FeatureScaler, FeatureSetup, setup_features
from training.index import WindowIndex, build_index
from training.loader import WindowLoader
from training.loop import LoopState, TargetScale
from training.models import build_model, count_parameters
from training.normalization import ChannelStats
from training.splits import Split, make_split


# --- machine --------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``/``cuda:N`` (must be available) or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(
            f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or auto"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"--device {name} was asked for but CUDA is not available here (torch "
            f"{torch.__version__}); use --device cpu, or install a CUDA build of torch"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def share_cores_with_workers(device: torch.device, workers: int) -> None:
    """On CPU, leave one core per loader worker: the workers decode, the main process computes.

    More torch threads than the cores left would only contend with the workers. The caller
    restores the previous thread count when the run ends.
    """
    if device.type == "cpu" and workers > 0:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))


# --- data -----------------------------------------------------------------------------------
@dataclass
class RunData:
    """The windows of a run: index, split, crop, normalisation, target scale and datasets."""

    index: WindowIndex
    split: Split
    crop: int | None
    stats: ChannelStats | None
    scale: TargetScale
    train: WindowDataset
    val: WindowDataset

    def summary(self) -> dict:
        """What the experiment records under ``data``."""
        index, split = self.index, self.split
        summary = index.summary()
        return {
            "files": summary["files"],
            "releases": sorted(set(index.releases.tolist())),
            "target": index.files[0].target_name,
            "n_channels": index.n_channels,
            "sfreq": index.sfreq,
            "window_samples": index.n_times,
            "crop_samples": self.crop,
            "normalization": None
            if self.stats is None
            else {"from": "train", "windows": self.stats.n_windows},
            "dropped_missing_target": summary["dropped_missing_target"],
            "subjects_without_target": summary["subjects_without_target"],
            "split": split.summary(),
            "splits": {
                "train": {"windows": int(split.train.size), "subjects": len(split.train_subjects)},
                "val": {"windows": int(split.val.size), "subjects": len(split.val_subjects)},
            },
            "val_subjects": list(split.val_subjects),
        }

    def close(self) -> None:
        """Close this process's file handles of both datasets."""
        self.train.close()
        self.val.close()


def crop_samples(challenge: ChallengeConfig, index: WindowIndex) -> int | None:
    """Samples of the challenge's crop at the files' rate (None: whole windows)."""
    if challenge.crop_seconds is None:
        return None
    crop = int(round(challenge.crop_seconds * index.sfreq))
    if crop > index.n_times:
        raise DataError(
            f"Challenge {challenge.number} crops {challenge.crop_seconds} s = {crop} samples at "
            f"{index.sfreq} Hz, but the windows have only {index.n_times} samples; check that "
            "the files are Challenge 2 (4 s) windows"
        )
    return crop


def prepare_data(
    config: TrainConfig, challenge: ChallengeConfig, checkpoint: Checkpoint | None = None
) -> RunData:
    """Index, split and datasets of ``config``; statistics from training windows or ``checkpoint``.

    Raises
    ------
    DataError
        Unusable files (see :func:`training.index.build_index`) or a crop longer than a window.
    CheckpointError
        The validation subjects recomputed now differ from the checkpoint's.
    """
    index = build_index(list(config.data), target=config.target, layout=challenge.default_layout)
    split = make_split(
        index, val_fraction=config.val_fraction, seed=config.seed, val_release=config.val_release
    )
    crop = crop_samples(challenge, index)
    if checkpoint is not None:
        if list(split.val_subjects) != list(checkpoint.val_subjects):
            raise CheckpointError(
                "the validation subjects of the resumed run differ from the ones recomputed now: "
                "the input files changed since the run started; resume with the original files"
            )
        stats, scale = checkpoint.channel_stats, checkpoint.target_scale
    else:
        stats = (
            compute_channel_stats(index, split.train, seed=config.seed)
            if config.normalize
            else None
        )
        scale = _target_scale(index.targets[split.train])
    train = WindowDataset(
        index, split.train, crop_samples=crop, random_crop=crop is not None, stats=stats
    )
    val = WindowDataset(index, split.val, crop_samples=crop, random_crop=False, stats=stats)
    return RunData(index, split, crop, stats, scale, train, val)


def _target_scale(train_targets: np.ndarray) -> TargetScale:
    targets = np.asarray(train_targets, dtype=np.float64)
    std = float(targets.std())
    return TargetScale(float(targets.mean()), std if std > 0 else 1.0)


# --- features -------------------------------------------------------------------------------
@dataclass
class RunFeatures:
    """The subject features of a run (``setup`` None for ``--features none``) and its collate."""

    setup: FeatureSetup | None
    scaler: FeatureScaler | None
    collate: BatchCollate
    record: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Feature columns the model receives (before the availability mask doubles them)."""
        return 0 if self.setup is None else len(self.record["columns"])

    @property
    def columns(self) -> list[str] | None:
        return self.record.get("columns")

    def close(self) -> None:
        """Close the main process's feature-store client, if the source has one."""
        close = getattr(None if self.setup is None else self.setup.source, "close", None)
        if close is not None:
            close()


def prepare_features(
    settings, config: TrainConfig, split: Split, checkpoint: Checkpoint | None = None
) -> RunFeatures:
    """The feature source of ``config`` (scaler from the training subjects or ``checkpoint``).

    Raises
    ------
    FeatureError
        See :func:`training.features.setup_features`.
    CheckpointError
        The service's feature columns differ from the checkpoint's.
    """
    setup = setup_features(
        settings,
        mode=config.features,
        challenge=config.challenge,
        train_subjects=split.train_subjects,
        all_subjects=[*split.train_subjects, *split.val_subjects],
        feature_set=config.feature_set,
        as_of=parse_as_of(config.as_of) if config.as_of else None,
        cache_size=config.cache_size,
    )
    if setup is None:
        return RunFeatures(
            None, None, BatchCollate(policy=config.missing_features), {"mode": config.features}
        )
    scaler = setup.scaler
    if checkpoint is not None:
        if checkpoint.feature_columns != setup.record["columns"]:
            raise CheckpointError(
                "the feature columns of the service changed since the run started; "
                "resume is not possible, start a new run"
            )
        scaler = checkpoint.feature_scaler
    collate = BatchCollate(setup.source, scaler, policy=config.missing_features)
    return RunFeatures(setup, scaler, collate, setup.record)


# --- loaders --------------------------------------------------------------------------------
def make_loader(
    dataset: WindowDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int,
    collate: BatchCollate,
    device: torch.device,
) -> WindowLoader:
    """The run's loader of ``dataset``: seeded :class:`EpochSampler`, persistent workers."""
    return WindowLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle=shuffle, seed=seed),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        pin_memory=device.type == "cuda",
    )


def make_loaders(
    config: TrainConfig, data: RunData, collate: BatchCollate, device: torch.device
) -> tuple[WindowLoader, WindowLoader]:
    """(train, validation) loaders; validation batches are at least 64 windows."""
    common = {"seed": config.seed, "workers": config.workers, "collate": collate, "device": device}
    train = make_loader(data.train, batch_size=config.batch_size, shuffle=True, **common)
    val = make_loader(data.val, batch_size=max(64, config.batch_size), shuffle=False, **common)
    return train, val


# --- model ----------------------------------------------------------------------------------
@dataclass
class RunModel:
    """Model, optimiser, scheduler and loop state of a run, and what the run records about them."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: LoopState
    info: dict


def prepare_model(
    config: TrainConfig,
    challenge: ChallengeConfig,
    data: RunData,
    n_features: int,
    device: torch.device,
    checkpoint: Checkpoint | None = None,
) -> RunModel:
    """The challenge's model and optimiser with a cosine schedule over ``config.epochs``.

    With ``checkpoint``: its model, optimiser, scheduler, loop and torch RNG states (the
    schedule is stretched to the new ``epochs``).
    """
    model = build_model(
        config.model,
        n_chans=data.index.n_channels,
        n_times=data.train.n_times,
        n_features=n_features,
        sfreq=data.index.sfreq,
    ).to(device)
    optimizer = challenge.make_optimizer(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    state = LoopState()
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        scheduler.load_state_dict(checkpoint.scheduler_state)
        scheduler.T_max = config.epochs
        state = copy.deepcopy(checkpoint.loop_state)  # fit() advances it; the checkpoint stays
        torch.set_rng_state(checkpoint.torch_rng_state)
    info = {
        "name": config.model,
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "n_chans": data.index.n_channels,
        "n_times": data.train.n_times,
        "n_features": n_features,
        "implementation": type(getattr(model, "backbone", model)).__module__,
    }
    return RunModel(model, optimizer, scheduler, state, info)


__all__ = [
    "RunData",
    "RunFeatures",
    "RunModel",
    "crop_samples",
    "make_loader",
    "make_loaders",
    "prepare_data",
    "prepare_features",
    "prepare_model",
    "resolve_device",
    "seed_everything",
    "share_cores_with_workers",
]
