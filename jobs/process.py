"""Processes that die with their parent (Linux ``PR_SET_PDEATHSIG``).

A worker runs each job in a work horse, and a ``train`` job in an ``eegfs`` process below the
horse. RQ's horse calls ``setpgrp``, so a SIGKILL of the worker would leave both running: with
the parent-death signal set, the kernel sends SIGKILL to each as soon as its parent dies. No
library offers this (it is one ``prctl`` call), hence ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL:
    # The symbols of the running program include libc's; no ctypes.util.find_library, which
    # runs ldconfig in a subprocess (tens of milliseconds in every work horse).
    return ctypes.CDLL(None, use_errno=True)


def load_libc() -> None:
    """Load libc now (before forking), so that work horses do not each load it."""
    if sys.platform.startswith("linux"):
        _libc()


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Returns False where this is not supported (not Linux). When the parent died before the
    call, the process exits at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = _libc()
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    if os.getppid() != parent or parent == 1:
        os._exit(1)  # the parent is already gone
    return True


__all__ = ["die_with_parent", "load_libc"]
