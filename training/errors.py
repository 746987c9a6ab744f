"""Errors of the ``training`` package.

::

    TrainingError                 root: catch this to handle any training failure
     +-- DataError                an HDF5 file, dataset or split is not usable as given
     +-- FeatureError             features are missing under the "fail" policy, or a label
     |                            would reach the model inputs
     +-- CheckpointError          a checkpoint cannot be written, found or read back
     +-- ReproduceError           a recorded run cannot be rebuilt from its record
     +-- PredictError             a registered model cannot predict a file as given (shapes
                                  differ, lineage incomplete)
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


class PredictError(TrainingError):
    """A file cannot be predicted by a registered model (other shapes, incomplete lineage)."""


__all__ = [
    "CheckpointError",
    "DataError",
    "FeatureError",
    "PredictError",
    "ReproduceError",
    "TrainingError",
]
