"""Training on EEG windows with subject features from the feature store; see docs/training.md.

``train(settings, TrainConfig(...))`` runs (or resumes) one recorded run; ``eegfs train`` is its
command. Imports ``featurestore``, ``pipelines``, ``tracking`` and ``services``; the CLI, the job
queue and the dashboard import ``training``.

The names below are imported on first use, so that ``import training.live`` (the dashboard's
live-state keys) does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Checkpoint": "training.checkpoints",
    "load_checkpoint": "training.checkpoints",
    "RESUME_OVERRIDABLE": "training.config",
    "TrainConfig": "training.config",
    "CheckpointError": "training.errors",
    "DataError": "training.errors",
    "FeatureError": "training.errors",
    "TrainingError": "training.errors",
    "TrainResult": "training.results",
    "format_summary": "training.results",
    "train": "training.runner",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
