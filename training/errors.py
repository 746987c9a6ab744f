"""Errors of the ``training`` package.

::

    TrainingError                 root: catch this to handle any training failure
     +-- DataError                an HDF5 file, dataset or split is not usable as given
     +-- FeatureError             features are missing under the "fail" policy, or a label
     |                            would reach the model inputs
     +-- CheckpointError          a checkpoint cannot be written, found or read back
"""

from __future__ import annotations


class TrainingError(Exception):
    """Root error of the ``training`` package."""


class DataError(TrainingError):
    """An input file, dataset, attribute or split is not usable; the message names it and a fix."""


class FeatureError(TrainingError):
    """Features cannot be provided as the configuration asks (missing subjects, label columns)."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be saved, fetched or loaded."""


class ReproduceError(TrainingError):
    """A recorded run cannot be rebuilt from its record (snapshot missing or modified, ...)."""


__all__ = ["CheckpointError", "DataError", "FeatureError", "ReproduceError", "TrainingError"]
