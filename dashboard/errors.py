"""Errors of the dashboard package (one root: :class:`DashboardError`)."""

from __future__ import annotations


class DashboardError(Exception):
    """Root error of the ``dashboard`` package; the message says what and how to fix it."""


class RunNotFoundError(DashboardError):
    """No run with the requested id in the tracking database."""
