"""Run ``eegfs features build`` in this process and SIGKILL it at a chosen point (fault tests).

Usage::

    python build_fault_runner.py KILL -- [eegfs arguments...]

``KILL`` is ``none`` or ``<module>:<attribute>:<n>:<before|after>[:<text>]``: the attribute is
wrapped so that its n-th call (counting only calls whose arguments, as text, contain ``<text>``)
stops the build there, before or after the real call. With ``EEGFS_TEST_PAUSED`` set to a path,
the runner creates that file and waits, so that the test kills it from outside with SIGKILL
(and can look at the store at that exact moment first); without it the runner SIGKILLs itself.
SIGKILL cannot be caught: no ``finally`` block, ``atexit`` hook or lock release of ours runs,
exactly as when the machine or the OOM killer stops a build.

Barrier for builds started together: with ``EEGFS_TEST_READY`` and ``EEGFS_TEST_GO`` set (two
paths), the runner creates the first once everything is imported and waits for the second.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import time
from pathlib import Path


def _stop_here() -> None:
    """Wait to be killed (EEGFS_TEST_PAUSED), else SIGKILL this process."""
    paused = os.environ.get("EEGFS_TEST_PAUSED")
    if paused:
        Path(paused).touch()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
        sys.exit("build_fault_runner: paused for 120 s and nobody killed this process")
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(spec: str) -> None:
    module_name, attr, n, when, *text = spec.split(":", 4)
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    target, match, calls = int(n), text[0] if text else "", [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if match in f"{args!r} {kwargs!r}":
            calls[0] += 1
            if calls[0] == target and when == "before":
                _stop_here()
            result = original(*args, **kwargs)
            if calls[0] == target and when == "after":
                _stop_here()
            return result
        return original(*args, **kwargs)

    setattr(module, attr, wrapper)


def _barrier() -> None:
    ready, go = os.environ.get("EEGFS_TEST_READY"), os.environ.get("EEGFS_TEST_GO")
    if not (ready and go):
        return
    Path(ready).touch()
    deadline = time.monotonic() + 120
    while not Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("build_fault_runner: no go signal within 120 s")
        time.sleep(0.005)


def main(argv: list[str]) -> None:
    kill, sep, *args = argv
    if sep != "--":
        sys.exit("usage: build_fault_runner.py KILL -- [eegfs arguments...]")
    import pipelines.build  # noqa: F401  (the modules whose functions may be wrapped)
    from eegfs.cli import cli  # import everything before the barrier and the kill point

    if kill != "none":
        _install_kill(kill)
    _barrier()
    cli.main(args=args, prog_name="eegfs")


if __name__ == "__main__":
    main(sys.argv[1:])
