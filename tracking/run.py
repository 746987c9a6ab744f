"""One experiment being recorded: :class:`Run`, returned by ``Tracker.start_run`` / ``resume_run``.

A Run validates each call, builds an op record with client-generated ObjectIds (see
:mod:`tracking.ops`) and submits it through its :class:`~tracking.tracker.Tracker`, whose
background writer applies it or spools it; nothing here waits for MongoDB. Step metrics are
buffered and sent in batches into bounded bucket documents.
"""

from __future__ import annotations

import socket
import threading
import time
import traceback as tb_module
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from services.files import atomic_copy, sha256_file
from tracking import schema
from tracking.best import next_order
from tracking.documents import clean_metrics, redact_text
from tracking.errors import TrackingError
from tracking.hooks import RunStopped, run_hooks
from tracking.status import COMPLETED, FAILED, FINAL_STATUSES, RUNNING, STOPPED
from tracking.timeutil import utcnow

if TYPE_CHECKING:
    from tracking.tracker import Tracker

#: Step metrics are sent when this many points are buffered ...
METRICS_BATCH_POINTS = 500
#: ... or when the oldest buffered point is this old (seconds), whichever comes first.
METRICS_FLUSH_INTERVAL_S = 2.0
#: Heartbeats closer together than this (seconds) are not sent.
HEARTBEAT_MIN_INTERVAL_S = 1.0
#: The run log is stored in the experiment document, capped to its last LOG_MAX_CHARS characters.
LOG_MAX_CHARS = 1_000_000
#: Error tracebacks are capped to their last TRACEBACK_MAX_CHARS characters.
TRACEBACK_MAX_CHARS = 100_000


def _tail(text: str | None, limit: int) -> str | None:
    """The last ``limit`` characters of ``text``, credentials masked (None stays None)."""
    if text is None:
        return None
    text = redact_text(str(text))
    return text if len(text) <= limit else "...[truncated]...\n" + text[-limit:]


class Run:
    """One experiment being recorded. Use as a context manager, or call :meth:`finish`.

    Leaving the ``with`` block normally marks the run ``completed``; an exception marks it
    ``failed`` (error message and traceback stored) and KeyboardInterrupt ``stopped``. The
    exception is never swallowed.
    """

    def __init__(
        self, tracker: Tracker, experiment_id: ObjectId, *, name: str, challenge: int | None
    ) -> None:
        self.id: ObjectId = experiment_id
        self.name = name
        self.challenge = challenge
        self._tracker = tracker
        self._lock = threading.RLock()
        self._finished: str | None = None
        self._last_epoch: int | None = None
        self._latest_checkpoint: dict[str, Any] | None = None
        self._best_checkpoint: dict[str, Any] | None = None
        self._buffer: list[dict[str, Any]] = []
        self._buffer_since = 0.0
        self._bucket_id: ObjectId | None = None
        self._bucket_points = 0
        self._last_heartbeat = 0.0
        self._host = socket.gethostname()

    def __repr__(self) -> str:
        return f"Run(id={self.id}, name={self.name!r}, status={self._finished or RUNNING!r})"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._finished is not None:
            return False
        if exc_type is None:
            self._complete()
        elif issubclass(exc_type, RunStopped):
            self.finish(STOPPED, error=str(exc))
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(STOPPED, error="KeyboardInterrupt")
        elif issubclass(exc_type, SystemExit) and exc.code in (0, None):
            self._complete()
        else:
            self.finish(
                FAILED,
                error=f"{exc_type.__name__}: {exc}",
                traceback="".join(tb_module.format_exception(exc_type, exc, tb)),
            )
        return False

    def _complete(self) -> None:
        """Mark the run completed, unless a hook says it may not (then failed, with why)."""
        guard = run_hooks().may_complete
        refusal = None if guard is None else guard(str(self.id))
        if refusal is None:
            self.finish(COMPLETED)
        else:
            self.finish(FAILED, error=refusal)

    def _check_active(self) -> None:
        if self._finished is not None:
            raise TrackingError(
                f"run {self.id} is already finished ({self._finished}); resume it with "
                "tracker.resume_run(run_id) to log more"
            )

    def _submit(self, op: dict[str, Any]) -> None:
        self._tracker._submit(op)

    # --- logging ------------------------------------------------------------------------------
    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of one epoch; logging an epoch again replaces its values."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        values = clean_metrics(metrics, f"log_epoch({epoch}) metrics")
        with self._lock:
            self._check_active()
            now = utcnow()
            self._submit(
                {
                    "op": "epoch",
                    "id": ObjectId(),
                    "experiment_id": self.id,
                    "epoch": epoch,
                    "metrics": values,
                    "at": now,
                    "host": self._host,
                }
            )
            self._last_heartbeat = time.monotonic()
            self._last_epoch = epoch if self._last_epoch is None else max(self._last_epoch, epoch)
        on_epoch = run_hooks().on_epoch
        if on_epoch is not None:
            on_epoch(str(self.id), epoch, values)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer step-level metrics; they are written in batches into bounded bucket documents.

        A batch is sent every ``METRICS_BATCH_POINTS`` points or ``METRICS_FLUSH_INTERVAL_S``
        seconds (checked at each call), and at finish, flush, close and before any read.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        values = clean_metrics(metrics, f"log_metrics(step={step}) metrics")
        with self._lock:
            self._check_active()
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer.append({"step": step, "at": utcnow(), "values": values})
            if (
                len(self._buffer) >= METRICS_BATCH_POINTS
                or time.monotonic() - self._buffer_since >= METRICS_FLUSH_INTERVAL_S
            ):
                self.flush_metrics()

    def flush_metrics(self) -> None:
        """Send buffered step metrics now (split over buckets of at most BUCKET_MAX_POINTS)."""
        with self._lock:
            points, self._buffer = self._buffer, []
            while points:
                if self._bucket_id is None or self._bucket_points >= schema.BUCKET_MAX_POINTS:
                    self._bucket_id, self._bucket_points = ObjectId(), 0
                room = schema.BUCKET_MAX_POINTS - self._bucket_points
                chunk, points = points[:room], points[room:]
                steps = [p["step"] for p in chunk]
                self._submit(
                    {
                        "op": "metrics",
                        "experiment_id": self.id,
                        "bucket_id": self._bucket_id,
                        "batch_id": ObjectId(),
                        "points": chunk,
                        "first_step": min(steps),
                        "last_step": max(steps),
                        "heartbeat": chunk[-1]["at"],
                    }
                )
                self._bucket_points += len(chunk)

    def log_checkpoint(
        self,
        path: Path,
        *,
        epoch: int,
        metrics: Mapping[str, float],
        is_best: bool = False,
        upload: bool = False,
    ) -> ObjectId:
        """Record a checkpoint file (size, sha256, metrics); returns the checkpoint id.

        ``is_best=True`` makes it the experiment's only best checkpoint: ``best_checkpoint`` and
        ``summary.best_epoch`` of the experiment move to it in one update (tracking/best.py).
        ``upload=True`` also stores the file in GridFS: a snapshot is copied under the spool
        directory now (so a file overwritten by the next save is not uploaded by mistake) and
        uploaded by the background writer.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        values = clean_metrics(metrics, f"log_checkpoint(epoch={epoch}) metrics")
        source = Path(path).resolve()
        if not source.is_file():
            raise TrackingError(
                f"checkpoint file {source} does not exist; save it before logging it"
            )
        with self._lock:
            self._check_active()
            ckpt_id, file_id, blob = ObjectId(), None, None
            if upload:
                file_id = ObjectId()
                blob = self._tracker.spool_dir / "blobs" / f"{file_id}.bin"
                digest = atomic_copy(source, blob)
            else:
                digest = sha256_file(source)
            doc = {
                "_id": ckpt_id,
                "experiment_id": self.id,
                "epoch": epoch,
                "path": str(source),
                "host": self._host,
                "size_bytes": source.stat().st_size,
                "sha256": digest,
                "metrics": values,
                "is_best": bool(is_best),
                "created_at": utcnow(),
                "gridfs_id": file_id,
                "upload_status": "pending" if upload else "not requested",
            }
            op = {"op": "checkpoint", "doc": doc, "blob": None if blob is None else str(blob)}
            if is_best:
                op["order"] = next_order()  # a replayed older switch never moves the best back
            self._submit(op)
            latest = self._latest_checkpoint
            if latest is None or epoch >= latest["epoch"]:
                self._latest_checkpoint = doc
            if is_best:
                other = self._latest_checkpoint
                if other is not doc and other is not None and other.get("is_best"):
                    self._latest_checkpoint = {**other, "is_best": False}
                self._best_checkpoint = doc
            return ckpt_id

    def heartbeat(self) -> None:
        """Say the run is alive (sent at most once per HEARTBEAT_MIN_INTERVAL_S)."""
        with self._lock:
            self._check_active()
            if time.monotonic() - self._last_heartbeat < HEARTBEAT_MIN_INTERVAL_S:
                return
            self._last_heartbeat = time.monotonic()
            self._submit(
                {"op": "update", "id": self.id, "update": {"$max": {"heartbeat": utcnow()}}}
            )

    def set_summary(self, metrics: Mapping[str, float]) -> None:
        """Set summary metrics (merged into ``summary``; used by search, best and compare).

        ``best_epoch`` belongs to the run's best checkpoint when it has one: it is stored with
        ``best_checkpoint`` in one update (tracking/best.py), so here it is only checked.

        Raises
        ------
        ValueError
            When ``best_epoch`` differs from the epoch of the run's best checkpoint.
        """
        values = clean_metrics(metrics, "set_summary metrics")
        if not values:
            return
        with self._lock:
            self._check_active()
            best = self._best_checkpoint
            if best is not None and "best_epoch" in values:
                if values["best_epoch"] != best["epoch"]:
                    raise ValueError(
                        f"run {self.id}: set_summary best_epoch={values['best_epoch']:g} disagrees "
                        f"with the run's best checkpoint (epoch {best['epoch']}, "
                        f"{best.get('path')}); log that epoch's checkpoint with is_best=True, or "
                        "leave best_epoch out (it is stored with the best checkpoint)"
                    )
                del values["best_epoch"]
            if not values:
                return
            self._submit(
                {
                    "op": "update",
                    "id": self.id,
                    "update": {"$set": {f"summary.{k}": v for k, v in values.items()}},
                }
            )

    def attach_log(self, text: str) -> None:
        """Store the run's log text in the experiment's ``log`` field.

        A capped field, not GridFS: the last ``LOG_MAX_CHARS`` characters are kept (the end of a
        log is what explains a crash), with ``truncated`` and ``total_chars``; credentials in
        URIs or ``password=`` pairs are masked. Attaching again replaces the log.
        """
        if not isinstance(text, str):
            raise TypeError(f"attach_log expects the log text as str, got {type(text).__name__}")
        stored = _tail(text, LOG_MAX_CHARS)
        with self._lock:
            self._submit(
                {
                    "op": "update",
                    "id": self.id,
                    "update": {
                        "$set": {
                            "log": {
                                "text": stored,
                                "truncated": len(text) > LOG_MAX_CHARS,
                                "total_chars": len(text),
                                "attached_at": utcnow(),
                            }
                        }
                    },
                }
            )

    def finish(
        self, status: str = COMPLETED, *, error: str | None = None, traceback: str | None = None
    ) -> None:
        """Mark the run ``completed``, ``failed`` or ``stopped`` (with error and traceback).

        ``completed`` is applied only while the stored status is still ``running``: a run that
        was marked failed by someone else (a job supervisor: "worker lost") stays failed.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"finish status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}"
            )
        with self._lock:
            self.flush_metrics()
            now = utcnow()
            self._submit(
                {
                    "op": "update",
                    "id": self.id,
                    **({"where": {"status": RUNNING}} if status == COMPLETED else {}),
                    "update": {
                        "$set": {
                            "status": status,
                            "ended_at": now,
                            "error": _tail(error, TRACEBACK_MAX_CHARS),
                            "traceback": _tail(traceback, TRACEBACK_MAX_CHARS),
                        },
                        "$max": {"heartbeat": now},
                    },
                }
            )
            self._finished = status

    # --- local state (no server round trip) ---------------------------------------------------
    def last_epoch(self) -> int | None:
        """Highest epoch logged (including before a resume), or None."""
        return self._last_epoch

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint document with the highest epoch, or None."""
        return None if self._latest_checkpoint is None else dict(self._latest_checkpoint)

    def best_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint document currently marked best, or None."""
        return None if self._best_checkpoint is None else dict(self._best_checkpoint)


__all__ = ["Run"]
