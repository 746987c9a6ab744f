"""Errors of the ``pipelines`` package.

Hierarchy::

    PipelineError                 root: catch this to handle anything the pipelines raise
    ├── InputDataError            a bad input file (HDF5 or participants.tsv): names file, dataset, problem, fix
    ├── ChunkDecodeError          (pipelines.hdf5_chunks) a raw HDF5 chunk does not decode; callers name the file
    └── FeatureTableError         the Parquet feature tables or their manifest are unusable

The feature-store client (``featurestore``) derives its own root error from ``PipelineError``.

Every message names the file/dataset/key, what was found, what was expected and a fix.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root error of the ``pipelines`` package."""


class InputDataError(PipelineError, ValueError):
    """An input file is missing, unreadable or does not match the expected layout."""


class FeatureTableError(PipelineError):
    """The feature tables under ``data/features`` are missing, inconsistent or unwritable."""


__all__ = ["FeatureTableError", "InputDataError", "PipelineError"]
