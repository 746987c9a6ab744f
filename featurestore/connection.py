"""The client's Redis connection and what its failures mean.

The client, Feast's online store (through :func:`featurestore.feast_adapter.attach_redis_client`)
and the materialization marker share one redis-py client made from ``REDIS_URL`` by
:func:`services.connections.redis_client`, so any password that a URL can carry
(percent-encoded) works: nothing goes through Feast's ``host:port,password=...`` string.
"""

from __future__ import annotations

import redis

from featurestore.errors import FeatureStoreError
from services.connections import redis_client, redis_error_text


def open_redis(url: str) -> redis.Redis:
    """The redis-py client of ``url`` (short timeouts; no connection is made yet)."""
    return redis_client(url)


def redis_failure(exc: BaseException, url: str, doing: str, *, hint: str = "") -> FeatureStoreError:
    """A :class:`FeatureStoreError` saying why ``doing`` (e.g. "online read of ...") failed.

    Authentication failures and unreachable servers get their own fixes; anything else gets
    ``hint``. The address is masked (no password in the message).
    """
    server = redis_error_text(exc, url)
    if server is not None:
        return FeatureStoreError(f"{doing} failed: {server}")
    # type and text: redis-py's repr() hides the server's message
    return FeatureStoreError(
        f"{doing} failed: {type(exc).__name__}: {exc}{'. ' + hint if hint else ''}"
    )


__all__ = ["open_redis", "redis_failure"]
