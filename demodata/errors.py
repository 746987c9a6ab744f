"""Errors of the ``demodata`` package.

Hierarchy::

    DemoDataError      root: writing the demo data failed (names the file and the cause)

Bad arguments raise ``ValueError`` before anything is written.
"""

from __future__ import annotations


class DemoDataError(Exception):
    """Root error of ``demodata``: writing the demo data failed (names the file and the cause)."""


__all__ = ["DemoDataError"]
