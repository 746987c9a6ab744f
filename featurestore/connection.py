"""The client's Redis connection and what its failures mean.

The client, Feast's online store (through :func:`featurestore.feast_adapter.attach_redis_client`)
and the materialization marker share one redis-py client made from ``REDIS_URL`` by
:func:`services.connections.redis_client`, so any password that a URL can carry
(percent-encoded) works: nothing goes through Feast's ``host:port,password=...`` string.
"""

from __future__ import annotations

import redis

from featurestore.errors import FeatureStoreError
from services.connections import mask_uri, redis_client


def open_redis(url: str) -> redis.Redis:
    """The redis-py client of ``url`` (short timeouts; no connection is made yet)."""
    return redis_client(url)


def _chain(exc: BaseException | None):
    """``exc`` and the errors it was raised from (Feast wraps some), each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _refused_credentials(exc: BaseException) -> bool:
    if isinstance(exc, redis.AuthenticationError):
        return True
    # NOAUTH / WRONGPASS in a reply redis-py did not classify; "Protocol error: unauthenticated
    # multibulk length" is Redis refusing a long command from a client that did not log in
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        text.startswith(("NOAUTH", "WRONGPASS")) or "unauthenticated" in text
    )


def is_auth_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it wraps) is Redis refusing the credentials."""
    return any(_refused_credentials(e) for e in _chain(exc))


def _is_unreachable(exc: BaseException) -> bool:
    unreachable = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
    return any(isinstance(e, unreachable) for e in _chain(exc))


def redis_failure(exc: BaseException, url: str, doing: str, *, hint: str = "") -> FeatureStoreError:
    """A :class:`FeatureStoreError` saying why ``doing`` (e.g. "online read of ...") failed.

    Authentication failures and unreachable servers get their own fixes; anything else gets
    ``hint``. The address is masked (no password in the message).
    """
    where = f"Redis at {mask_uri(url)}"
    if is_auth_failure(exc):
        return FeatureStoreError(
            f"{doing} failed: {where}: authentication failed ({exc}). Check the user name and "
            "password in REDIS_URL (percent-encode special characters: "
            "urllib.parse.quote(password, safe=''))"
        )
    if _is_unreachable(exc):
        return FeatureStoreError(
            f"{doing} failed: {where} does not answer ({exc}). Start it (eegfs services up) or "
            "fix REDIS_URL"
        )
    # type and text: redis-py's repr() hides the server's message
    return FeatureStoreError(
        f"{doing} failed: {type(exc).__name__}: {exc}{'. ' + hint if hint else ''}"
    )


__all__ = ["is_auth_failure", "open_redis", "redis_failure"]
