"""Errors of the ``jobs`` package.

Every error raised on purpose by this package derives from :class:`JobsError`::

    JobsError
     ├── JobNotFoundError    a job id that matches no job
     ├── JobStateError       an operation the job's state does not allow (retry a running job)
     ├── JobFailedError      a job's command exited with an error (its output tail is the message)
     ├── FencedError         an attempt that was handed on to another worker tried to finish
     └── SweepError          a bad search-space file, an unknown sweep, a sweep that exists
"""

from __future__ import annotations


class JobsError(Exception):
    """Root error of the ``jobs`` package."""


class JobNotFoundError(JobsError, LookupError):
    """A job id that matches no job."""


class JobStateError(JobsError):
    """An operation that the job's current state does not allow."""


class JobFailedError(JobsError):
    """The command of a job exited with an error."""


class FencedError(JobsError):
    """An attempt that is no longer the job's current one tried to finish it."""


class SweepError(JobsError, ValueError):
    """A sweep that cannot be created or found."""
