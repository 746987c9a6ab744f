"""Experiment tracking in MongoDB: runs, epochs, step metrics, checkpoints, subjects, datasets,
a model registry, the SQLite migration and backups. Imports only ``services``.

The training loop uses :class:`Tracker` and :class:`Run`; see docs/tracking.md. They are
imported on first use, so ``import tracking.status`` (the run statuses, read by the CLI to
build its options) does not load pymongo.
"""

from typing import TYPE_CHECKING, Any

from tracking.errors import (
    ChecksumMismatchError,
    InvalidIdError,
    NotFoundError,
    TrackingError,
    TrackingUnavailableError,
)

if TYPE_CHECKING:
    from tracking.run import Run
    from tracking.tracker import Tracker


def __getattr__(name: str) -> Any:
    if name == "Tracker":
        from tracking.tracker import Tracker

        return Tracker
    if name == "Run":
        from tracking.run import Run

        return Run
    raise AttributeError(f"module 'tracking' has no attribute {name!r}")


__all__ = [
    "ChecksumMismatchError",
    "InvalidIdError",
    "NotFoundError",
    "Run",
    "Tracker",
    "TrackingError",
    "TrackingUnavailableError",
]
