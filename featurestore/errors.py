"""Errors of the ``featurestore`` package.

Hierarchy::

    pipelines.errors.PipelineError
    └── FeatureStoreError     root of this package: Feast repository, registry, Redis, retrieval

``FeatureStoreError`` derives from :class:`pipelines.errors.PipelineError` because the client
also lets the errors of the ``pipelines`` it reads through (a bad manifest, an unreadable Parquet
table): callers catch ``PipelineError`` for both. Every message names the file, key or service,
what was found and a fix.
"""

from __future__ import annotations

from pipelines.errors import PipelineError


class FeatureStoreError(PipelineError):
    """The Feast repository, registry, online store or a retrieval failed."""


__all__ = ["FeatureStoreError"]
