"""The one place where library errors become CLI exits.

The root ``eegfs`` group is a :class:`HandledGroup`: every command under it, in any group, runs
inside :meth:`HandledGroup.invoke`, so no command catches errors itself.

* an error derived from a root error of one of our packages (``USER_ERROR_ROOTS``): one line,
  ``Error: <message>``, exit status 1;
* a ``ValueError`` raised by our own code (argument validation at a library boundary): one
  line, exit status 2 (click's status for usage errors);
* click's own exceptions (usage errors, ``--help``, aborts) and ``SystemExit``: click's handling;
* anything else (a bug, or a library failing in a way nobody expected): the traceback, exit 1.

Exit status 3 (:data:`EXIT_ROWS_REJECTED`) is not an error: the command did its work but the
data-quality gates held some rows back (``eegfs features build``); commands return it with
``ctx.exit``.

Library messages already name the file, key or id, what was found and the fix, so the CLI
prints them as they are. ``--log-level DEBUG`` also logs the traceback of a user error.
"""

from __future__ import annotations

import logging
from types import TracebackType

import click

log = logging.getLogger("eegfs")

#: Root errors of our packages, as ``module:qualname``. A package that adds a root error lists
#: it here; every error derived from one is a user error. Matched by name along the exception's
#: MRO, so checking an error imports nothing.
USER_ERROR_ROOTS = frozenset(
    {
        "services.connections:ServiceError",
        "pipelines.errors:PipelineError",
        "demodata.errors:DemoDataError",
        "tracking.errors:TrackingError",
        "training.errors:TrainingError",
        "jobs.errors:JobsError",
    }
)
#: Exit status of a command that finished but whose data-quality gates held rows back.
EXIT_ROWS_REJECTED = 3
#: Packages whose ``raise ValueError(...)`` validates arguments (a usage error, not a bug).
OUR_PACKAGES = (
    "services",
    "pipelines",
    "demodata",
    "featurestore",
    "tracking",
    "training",
    "jobs",
    "eegfs",
)


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc`` derives from one of ``USER_ERROR_ROOTS``."""
    return any(
        f"{cls.__module__}:{cls.__qualname__}" in USER_ERROR_ROOTS for cls in type(exc).mro()
    )


def _raised_by_us(tb: TracebackType | None) -> bool:
    """True when the innermost frame of ``tb`` is code of one of our packages."""
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.split(".", 1)[0] in OUR_PACKAGES


def is_usage_error(exc: BaseException) -> bool:
    """True for a ``ValueError`` raised by our own validation (not deep inside a library)."""
    return isinstance(exc, ValueError) and _raised_by_us(exc.__traceback__)


class UserError(click.ClickException):
    """A library error shown as one line (``Error: ...``) with exit status 1."""


class ArgumentError(click.UsageError):
    """A value our code rejected, shown as one line with click's usage exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ctx=None)  # no usage block: the message says what to fix


def server_error_message(exc: BaseException, settings) -> str | None:
    """One line for a Redis or MongoDB that refuses the login or does not answer, else None.

    Says "authentication failed" for a wrong user or password and "does not answer" for a server
    that is down or unreachable, with the address (password masked) and where to fix it (see
    :func:`services.connections.redis_error_text` / :func:`~services.connections.mongo_error_text`).
    """
    from services.connections import mongo_error_text, redis_error_text
    from services.settings import DEFAULT_MONGO_URI, DEFAULT_REDIS_URL

    redis_url = settings.redis_url if settings is not None else DEFAULT_REDIS_URL
    mongo_uri = settings.mongo_uri if settings is not None else DEFAULT_MONGO_URI
    return redis_error_text(exc, redis_url) or mongo_error_text(exc, mongo_uri)


class HandledGroup(click.Group):
    """A click group that turns user errors raised by any command below it into one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            server = server_error_message(exc, ctx.obj)
            if server is not None:
                log.debug("server error", exc_info=exc)
                raise UserError(server) from exc
            if is_user_error(exc):
                log.debug("user error", exc_info=exc)
                raise UserError(str(exc)) from exc
            if is_usage_error(exc):
                log.debug("invalid argument", exc_info=exc)
                raise ArgumentError(str(exc)) from exc
            raise


__all__ = [
    "EXIT_ROWS_REJECTED",
    "USER_ERROR_ROOTS",
    "ArgumentError",
    "HandledGroup",
    "UserError",
    "is_usage_error",
    "is_user_error",
    "server_error_message",
]
