"""Experiment tracking in MongoDB: runs, epochs, step metrics, checkpoints, subjects, datasets,
a model registry, the SQLite migration and backups. Imports only ``services``.

The training loop uses :class:`Tracker` and :class:`Run`; see docs/tracking.md.
"""

from tracking.errors import (
    ChecksumMismatchError,
    InvalidIdError,
    NotFoundError,
    TrackingError,
    TrackingUnavailableError,
)
from tracking.tracker import Run, Tracker

__all__ = [
    "ChecksumMismatchError",
    "InvalidIdError",
    "NotFoundError",
    "Run",
    "Tracker",
    "TrackingError",
    "TrackingUnavailableError",
]
