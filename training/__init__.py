"""Training on EEG windows with subject features from the feature store; see docs/training.md.

``train(settings, TrainConfig(...))`` runs (or resumes) one recorded run; ``eegfs train`` is its
command. Imports ``pipelines``, ``tracking`` and ``services``; nothing imports ``training`` but
the dashboard and the CLI.
"""

from training.errors import CheckpointError, DataError, FeatureError, TrainingError
from training.runner import TrainConfig, TrainResult, format_summary, load_checkpoint, train

__all__ = [
    "CheckpointError",
    "DataError",
    "FeatureError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "format_summary",
    "load_checkpoint",
    "train",
]
