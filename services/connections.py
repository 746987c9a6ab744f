"""Clients for Redis and MongoDB with short timeouts, and address helpers.

pymongo waits 30 s for a server by default and redis-py has no socket timeout: a hung server
would stall training. Every client the project makes comes from here, with explicit timeouts.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pymongo
import pymongo.errors
import redis

DEFAULT_REDIS_TIMEOUT_S = 2.0
DEFAULT_MONGO_TIMEOUT_MS = 2000


class ServiceError(Exception):
    """Root error of the ``services`` package."""


def redis_client(url: str, *, timeout_s: float = DEFAULT_REDIS_TIMEOUT_S, **kwargs) -> redis.Redis:
    """A redis-py client for ``url`` whose connects and socket reads give up after ``timeout_s``.

    Raises :class:`ServiceError` for an address redis-py cannot parse (no connection is made).
    """
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            **kwargs,
        )
    except ValueError as exc:  # a scheme, port or database redis-py cannot parse
        raise ServiceError(
            f"REDIS_URL {mask_uri(url)} is not a Redis address ({exc}); expected "
            "redis://[user:password@]host:port/db"
        ) from exc


def mongo_client(
    uri: str, *, timeout_ms: int = DEFAULT_MONGO_TIMEOUT_MS, **kwargs
) -> pymongo.MongoClient:
    """A pymongo client for ``uri`` with short server-selection, connect and socket timeouts.

    Raises :class:`ServiceError` for an address pymongo cannot parse (no connection is made).
    """
    options = {
        "serverSelectionTimeoutMS": timeout_ms,
        "connectTimeoutMS": timeout_ms,
        "socketTimeoutMS": max(timeout_ms * 5, 10_000),
        "tz_aware": True,
    }
    options.update(kwargs)
    try:
        return pymongo.MongoClient(uri, **options)
    except (pymongo.errors.ConfigurationError, ValueError) as exc:  # InvalidURI, a bad port
        raise ServiceError(
            f"MONGO_URI {mask_uri(uri)} is not a valid MongoDB address ({exc}); expected "
            "mongodb://[user:password@]host:port/[?options]"
        ) from exc


# ``user:password@`` inside any ``scheme://`` address, multi-host MongoDB URIs included. A regex
# rather than urllib: urlsplit cannot parse "h1:27017,h2:27017" and would turn masking into a crash.
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/@:]*:)(?P<pw>[^\s@/]+)(?=@)"
)


def mask_uri(text: str) -> str:
    """``text`` with the password of every address in it replaced by ``***`` (safe to print)."""
    return _URI_PASSWORD.sub(lambda m: m.group("head") + "***", text)


# --- what a refused or missing server means, in one line -----------------------------------------
#: MongoDB error codes of a refused login or a command that needs one.
MONGO_AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed


def error_chain(exc: BaseException | None):
    """``exc`` and the errors it was raised from or during (libraries wrap some), each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _redis_refused_login(exc: BaseException) -> bool:
    if isinstance(exc, redis.AuthenticationError):
        return True
    # NOAUTH / WRONGPASS in a reply redis-py did not classify; "Protocol error: unauthenticated
    # multibulk length" is Redis refusing a long command from a client that did not log in
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        text.startswith(("NOAUTH", "WRONGPASS")) or "unauthenticated" in text
    )


def error_reason(exc: BaseException) -> str:
    """The first line of ``exc``'s text without pymongo's topology dump and timeout list (any
    address in it masked)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for cut in (" (configured timeouts", ", Timeout:", ", full error:"):
        text = text.split(cut, 1)[0]
    return mask_uri(text)[:200]


def _detail(exc: BaseException) -> str:
    """`` (reason)`` for a message, or nothing when the reason only repeats the message."""
    reason = error_reason(exc)
    return "" if reason.strip(" .").lower() == "authentication failed" else f" ({reason})"


def _server_error_text(exc, where: str, setting: str, refused_login, unreachable) -> str | None:
    """The one line of :func:`redis_error_text` / :func:`mongo_error_text`: a refused login
    anywhere in ``exc``'s chain wins over a server that does not answer."""
    for e in error_chain(exc):
        if refused_login(e):
            return (
                f"{where}: authentication failed{_detail(e)}; check the user and password in "
                + setting
            )
    for e in error_chain(exc):
        if isinstance(e, unreachable):
            return (
                f"{where} does not answer ({error_reason(e)}); start it with `eegfs services up` or "
                f"check {setting.split()[0]}"
            )
    return None


def redis_error_text(exc: BaseException, url: str | None) -> str | None:
    """One line for a Redis at ``url`` that refuses the login or does not answer, else None.

    ``exc`` may wrap the redis-py error (Feast and RQ do). The address is masked; ``url`` None:
    the address is not known where the error is caught.
    """
    return _server_error_text(
        exc,
        f"Redis at {mask_uri(url)}" if url else "Redis",
        "REDIS_URL (percent-encode special characters)",
        _redis_refused_login,
        redis.ConnectionError | redis.TimeoutError,
    )


def _mongo_refused_login(exc: BaseException) -> bool:
    if isinstance(exc, pymongo.errors.OperationFailure):
        return exc.code in MONGO_AUTH_CODES
    # A failed login during the connection handshake: pymongo marks the server unknown and
    # server selection times out with the server's reply in its text.
    return isinstance(exc, pymongo.errors.ConnectionFailure) and "AuthenticationFailed" in str(exc)


def mongo_error_text(exc: BaseException, uri: str | None) -> str | None:
    """One line for a MongoDB at ``uri`` that refuses the login or does not answer, else None.

    ``uri`` None: the address is not known where the error is caught. The address is masked.
    """
    return _server_error_text(
        exc,
        f"MongoDB at {mask_uri(uri)}" if uri else "MongoDB",
        "MONGO_URI",
        _mongo_refused_login,
        pymongo.errors.ConnectionFailure,
    )


def redis_host_port_db(url: str) -> tuple[str, int, int]:
    """Host, port and database number of a ``redis://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ServiceError(
            f"REDIS_URL must start with redis:// or rediss://, got {mask_uri(url)!r}; "
            "example: redis://localhost:6379/0"
        )
    db = 0
    path = parts.path.lstrip("/")
    if path:
        if not path.isdigit():
            raise ServiceError(
                f"REDIS_URL database must be a number, got {path!r} in {mask_uri(url)!r}"
            )
        db = int(path)
    query_db = parse_qs(parts.query).get("db")
    if query_db:
        db = int(query_db[0])
    return parts.hostname or "localhost", parts.port or 6379, db


def redis_url_with_db(url: str, db: int) -> str:
    """``url`` pointing at database number ``db`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
