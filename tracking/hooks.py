"""Run hooks: how a process that runs a queued job takes part in the lifecycle of its runs.

Training never sets these. A process started by an ``eegfs worker`` (the ``eegfs`` CLI with a
job context, see ``jobs.child``) installs them once with :func:`set_run_hooks`, and every
:class:`tracking.Run` of the process then:

* stores ``start_fields`` in its experiment document (``job: {id, attempt, worker}``), and calls
  ``on_start(experiment_id)`` once the run exists (the job records the experiment id);
* calls ``on_epoch(experiment_id, epoch, metrics)`` after each logged epoch; the hook may raise
  :class:`RunStopped` (a sweep trial that the pruner stops), which ends the run ``stopped`` with
  the hook's reason;
* asks ``may_complete(experiment_id)`` before it is marked ``completed``: ``None`` lets it
  complete, a string is the reason why it may not (its job attempt was handed on to another
  worker) and the run is marked ``failed`` with that reason instead.

A run is marked ``completed`` only while its stored status is still ``running`` (see
:meth:`tracking.Run.finish`), so a run that a supervisor already marked ``failed`` ("worker
lost") stays failed whatever its own process does when it wakes up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracking.errors import TrackingError


class RunStopped(TrackingError):
    """Raised by a hook to stop a run on purpose; the run ends ``stopped`` with this reason."""


@dataclass(frozen=True)
class RunHooks:
    """Hooks of the current process (the defaults do nothing)."""

    start_fields: Mapping[str, Any] = field(default_factory=dict)
    on_start: Callable[[str], None] | None = None
    on_epoch: Callable[[str, int, Mapping[str, float]], None] | None = None
    may_complete: Callable[[str], str | None] | None = None


_hooks = RunHooks()


def set_run_hooks(hooks: RunHooks | None) -> None:
    """Install ``hooks`` for every run started from now on in this process (None: remove)."""
    global _hooks
    if hooks is not None and not isinstance(hooks, RunHooks):
        raise TypeError(f"set_run_hooks expects a RunHooks, got {type(hooks).__name__}")
    _hooks = hooks if hooks is not None else RunHooks()


def run_hooks() -> RunHooks:
    """The hooks installed in this process."""
    return _hooks


__all__ = ["RunHooks", "RunStopped", "run_hooks", "set_run_hooks"]
