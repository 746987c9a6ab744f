"""Errors of the ``tracking`` package.

Every error raised on purpose by this package derives from :class:`TrackingError`::

    TrackingError
     ├── InvalidIdError          a value that is not a 24-hex-digit ObjectId (also a ValueError)
     ├── NotFoundError           an id or name that matches nothing
     ├── ChecksumMismatchError   a file whose sha256 differs from the recorded one
     ├── TrackingUnavailableError  MongoDB did not answer a read
     ├── SpoolError              an unreadable spool file
     ├── MigrationError          an SQLite file that is not the EEG2025 schema
     ├── BackupError             an unusable backup directory
     └── DatasetError            an HDF5 file that cannot be catalogued
"""

from __future__ import annotations


class TrackingError(Exception):
    """Root error of the ``tracking`` package."""


class InvalidIdError(TrackingError, ValueError):
    """A value that should be an ObjectId is not one."""


class NotFoundError(TrackingError, LookupError):
    """An id or name that matches no document."""


class ChecksumMismatchError(TrackingError):
    """A file's sha256 differs from the one recorded in MongoDB."""


class TrackingUnavailableError(TrackingError):
    """MongoDB did not answer a read (writes are spooled instead and never raise this)."""


class SpoolError(TrackingError):
    """A spool file that cannot be read back."""


class MigrationError(TrackingError):
    """An SQLite file that cannot be migrated."""


class BackupError(TrackingError):
    """A backup directory that cannot be written or restored."""


class DatasetError(TrackingError):
    """An HDF5 file that cannot be catalogued."""


def mongo_unavailable(
    exc: BaseException, uri: str | None, doing: str = "", *, then: str = ""
) -> TrackingUnavailableError:
    """The :class:`TrackingUnavailableError` for ``exc``, a MongoDB failure while ``doing``.

    Says "authentication failed" for a refused login and "does not answer" otherwise, with the
    address masked (``uri`` None: the address is not known here) and ``then`` (what happens to
    the work, or what to do) appended. Raise it ``from exc``.
    """
    from services.connections import error_reason, mask_uri, mongo_error_text

    where = f"MongoDB at {mask_uri(uri)}" if uri else "MongoDB"
    text = mongo_error_text(exc, uri) or f"{where} does not answer ({error_reason(exc)})"
    prefix = f"cannot {doing}: " if doing else ""
    return TrackingUnavailableError(f"{prefix}{text}{'; ' + then if then else ''}")
