"""Training on EEG windows with subject features from the feature store; see docs/training.md.

``train(settings, TrainConfig(...))`` runs (or resumes) one recorded run; ``eegfs train`` is its
command. Imports ``pipelines``, ``tracking`` and ``services``; within the project only the CLI
(``eegfs train``) imports ``training``.
"""

from training.checkpoints import Checkpoint, load_checkpoint
from training.config import RESUME_OVERRIDABLE, TrainConfig
from training.errors import CheckpointError, DataError, FeatureError, TrainingError
from training.results import TrainResult, format_summary
from training.runner import train

__all__ = [
    "RESUME_OVERRIDABLE",
    "Checkpoint",
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
