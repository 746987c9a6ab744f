"""The experiment tracker used by training: runs, epochs, step metrics, checkpoints, heartbeats.

Writes never wait for MongoDB. Each call validates its arguments, builds an op record with
client-generated ObjectIds (see :mod:`tracking.ops`) and hands it to the background
:class:`~tracking.writer.Writer`, which applies it or, while the server is away, appends it to
an fsynced spool file and replays it later. Reads (``get_run``, ``resume_run``, queries) first
wait for the writes queued before them, so a process reads its own writes.

Example
-------
>>> tracker = Tracker(settings)                                          # doctest: +SKIP
>>> with tracker.start_run("eegnex", 2, model={"name": "EEGNeX"}, config=cfg,
...                        data=data, features=feats) as run:           # doctest: +SKIP
...     for epoch in range(n_epochs):
...         run.log_metrics({"loss": loss}, step=step)
...         run.log_epoch(epoch, {"train_loss": tl, "val_loss": vl})
...         run.log_checkpoint(path, epoch=epoch, metrics={"val_loss": vl}, is_best=best)
>>> tracker.close()                                                      # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import os
import socket
import threading
import time
import traceback as tb_module
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.errors import ConnectionFailure

from services.connections import mask_uri, mongo_client
from services.files import sha256_file
from services.settings import Settings
from tracking import schema
from tracking.documents import clean_metrics, redact, redact_text, to_document
from tracking.errors import (
    NotFoundError,
    TrackingError,
    TrackingUnavailableError,
)
from tracking.fetch import fetch_file
from tracking.files import copy_hashing
from tracking.gitinfo import detect_git
from tracking.hooks import RunStopped, run_hooks
from tracking.ids import to_object_id
from tracking.spool import SpoolFile, default_spool_dir
from tracking.status import DEFAULT_STALE_AFTER_S, FINAL_STATUSES, RUNNING, present
from tracking.timeutil import utcnow
from tracking.writer import Writer

log = logging.getLogger(__name__)

CHALLENGES = (1, 2)
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
#: How long reads wait for the writes queued before them (seconds).
READ_FLUSH_TIMEOUT_S = 30.0

_live_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


@atexit.register
def _close_live_trackers() -> None:
    # A process that forgets close() still applies (or spools) what it queued.
    for tracker in list(_live_trackers):
        try:
            tracker.close()
        except Exception:  # noqa: BLE001 - never fail interpreter shutdown
            log.exception("closing a tracker at exit failed")


def _tail(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = redact_text(str(text))
    return text if len(text) <= limit else "...[truncated]...\n" + text[-limit:]


class Tracker:
    """Records runs in MongoDB (database ``settings.mongo_db``) without ever blocking training.

    Parameters
    ----------
    settings:
        Project settings; ``mongo_uri`` and ``mongo_db`` are used.
    spool_dir:
        Where writes are spooled while MongoDB is away; default
        ``<settings.data_dir>/tracking/spool``.
    stale_after_s:
        A ``running`` run whose heartbeat is older than this is reported as ``stale``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        spool_dir: Path | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be positive seconds, got {stale_after_s}")
        self.settings = settings
        self.stale_after_s = float(stale_after_s)
        self.spool_dir = (
            Path(spool_dir) if spool_dir is not None else default_spool_dir(settings.data_dir)
        )
        self.db_name = settings.mongo_db
        try:
            self.client = mongo_client(settings.mongo_uri, appname="eegfs-tracking")
        except pymongo.errors.ConfigurationError as exc:  # InvalidURI is one
            raise TrackingError(
                f"MONGO_URI {mask_uri(settings.mongo_uri)} is not a valid MongoDB address ({exc}); "
                "expected mongodb://[user:password@]host:port/[?options]"
            ) from exc
        self.db = self.client[self.db_name]
        self._closed = False
        self._pid = os.getpid()
        self._runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self._spool = SpoolFile(self.spool_dir)
        # Indexes are created by the writer as soon as the server answers, so constructing a
        # Tracker never waits for an absent server.
        self._writer = Writer(
            self.client, self._spool, on_connect=lambda: schema.ensure_indexes(self.db)
        )
        _live_trackers.add(self)

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Tracker({mask_uri(self.settings.mongo_uri)!r}, db={self.db_name!r})"

    @property
    def online(self) -> bool:
        """True while the writer reaches MongoDB and nothing waits in the spool."""
        return self._writer.online and self._writer.pending_in_spool == 0

    @property
    def spool_path(self) -> Path:
        """This process's spool file (it exists only while writes wait in it)."""
        return self._spool.path

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send buffered step metrics and wait until every queued write is applied or spooled.

        Returns True when everything reached MongoDB, False when some writes wait in the spool.
        """
        self._check_open()
        for run in list(self._runs):
            run.flush_metrics()
        return self._writer.flush(timeout_s)

    def close(self) -> None:
        """Flush buffered metrics, apply or spool every queued write, then stop the writer.

        When MongoDB is away the spool file is left for the next automatic replay or
        ``eegfs runs sync``. Calling close twice is harmless.
        """
        if self._closed or os.getpid() != self._pid:
            return
        for run in list(self._runs):
            with contextlib.suppress(TrackingError):
                run.flush_metrics()
        synced = self._writer.stop()
        self._closed = True
        _live_trackers.discard(self)
        if not synced and self._spool.path.exists():
            log.warning(
                "tracking writes left in %s; run `eegfs runs sync` when MongoDB answers",
                self._spool.path,
            )
        self.client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TrackingError("this Tracker is closed; create a new Tracker(settings)")

    def _submit(self, op: dict[str, Any]) -> None:
        self._check_open()
        if os.getpid() != self._pid:
            # A forked child (e.g. a DataLoader worker) has no writer thread: its writes would
            # sit in a queue nobody reads.
            raise TrackingError(
                f"this Tracker was created in process {self._pid} and cannot write from process "
                f"{os.getpid()} (a fork); log from the main process or create a Tracker here"
            )
        op["db"] = self.db_name
        self._writer.submit(op)

    def _read(self, fn, what: str):
        """Run a read after the queued writes, turning connection problems into one error."""
        self._check_open()
        for run in list(self._runs):
            run.flush_metrics()
        if not self._writer.flush(READ_FLUSH_TIMEOUT_S) and not self._writer.online:
            raise TrackingUnavailableError(
                f"cannot {what}: MongoDB at {mask_uri(self.settings.mongo_uri)} is not answering "
                f"({self._writer.last_error}); writes are kept in {self._spool.path}"
            )
        try:
            return fn()
        except ConnectionFailure as exc:
            raise TrackingUnavailableError(
                f"cannot {what}: MongoDB at {mask_uri(self.settings.mongo_uri)} is not answering "
                f"({type(exc).__name__})"
            ) from exc

    # --- runs ---------------------------------------------------------------------------------
    def start_run(
        self,
        name: str,
        challenge: int,
        *,
        model: Mapping[str, Any],
        config: Mapping[str, Any],
        data: Mapping[str, Any],
        features: Mapping[str, Any],
        code: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        notes: str = "",
    ) -> Run:
        """Create an experiment (status ``running``) and return its :class:`Run`.

        Parameters
        ----------
        name:
            Human-readable run name (need not be unique).
        challenge:
            EEG2025 challenge, 1 (response time) or 2 (psychopathology).
        model:
            ``{"name", "architecture", "parameters", ...}``.
        config:
            Hyper-parameters; credential-like values are redacted before storing.
        data:
            ``{"files", "releases", "splits": {"train": {"windows", "subjects"}, ...}, ...}``.
        features:
            ``{"feature_service", "snapshot_id", ...}``.
        code:
            ``{"commit", "dirty", ...}``; None detects the git commit and dirty flag of the
            current directory.
        tags, notes:
            Free labels and text.
        """
        self._check_open()
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"run name must be a non-empty string, got {name!r}")
        if isinstance(challenge, bool) or challenge not in CHALLENGES:
            raise ValueError(f"challenge must be 1 or 2 (EEG2025), got {challenge!r}")
        if isinstance(tags, str):
            raise TypeError(
                f"tags must be a sequence of strings, got the string {tags!r}; use [{tags!r}]"
            )
        tags = [str(t) for t in tags]
        sections = {"model": model, "config": config, "data": data, "features": features}
        if code is None:
            code = detect_git()
        sections["code"] = code
        clean: dict[str, Any] = {}
        for key, value in sections.items():
            if not isinstance(value, Mapping):
                raise TypeError(f"start_run({key}=...) must be a dict, got {type(value).__name__}")
            clean[key] = to_document(redact(dict(value)), key)
        now = utcnow()
        doc = {
            "_id": ObjectId(),
            "name": name.strip(),
            "challenge": int(challenge),
            **clean,
            "status": RUNNING,
            "started_at": now,
            "ended_at": None,
            "heartbeat": now,
            "created_by": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "tags": tags,
            "notes": redact_text(str(notes)),
            "summary": {},
            "last_epoch": None,
            "last_metrics": {},
            "best_checkpoint": None,
            "error": None,
            "traceback": None,
            "schema_version": schema.SCHEMA_VERSION,
        }
        hooks = run_hooks()
        doc.update(to_document(dict(hooks.start_fields), "start_fields"))
        self._submit({"op": "create", "doc": doc})
        run = Run(self, doc["_id"], name=doc["name"], challenge=doc["challenge"])
        self._runs.add(run)
        if hooks.on_start is not None:
            hooks.on_start(str(run.id))
        return run

    def resume_run(self, experiment_id: str | ObjectId) -> Run:
        """Continue an existing run (status back to ``running``), e.g. after a crash.

        The returned :class:`Run` knows the run's last epoch and latest/best checkpoints.

        Raises
        ------
        InvalidIdError
            For a malformed id.
        NotFoundError
            When no experiment has this id.
        """
        exp_id = to_object_id(experiment_id)

        def read():
            doc = self.db[schema.EXPERIMENTS].find_one({"_id": exp_id})
            if doc is None:
                raise NotFoundError(
                    f"no experiment {exp_id} in database {self.db_name!r}; "
                    "list runs with `eegfs runs list`"
                )
            last = self.db[schema.EPOCHS].find_one(
                {"experiment_id": exp_id}, sort=[("epoch", pymongo.DESCENDING)]
            )
            latest = self.db[schema.CHECKPOINTS].find_one(
                {"experiment_id": exp_id},
                sort=[("epoch", pymongo.DESCENDING), ("created_at", pymongo.DESCENDING)],
            )
            best = self.db[schema.CHECKPOINTS].find_one({"experiment_id": exp_id, "is_best": True})
            return doc, last, latest, best

        doc, last, latest, best = self._read(read, f"resume experiment {exp_id}")
        now = utcnow()
        self._submit(
            {
                "op": "update",
                "id": exp_id,
                "update": {
                    "$set": {"status": RUNNING, "ended_at": None, "error": None, "traceback": None},
                    "$max": {"heartbeat": now},
                    "$addToSet": {
                        "resumes": {"at": now, "host": socket.gethostname(), "pid": os.getpid()}
                    },
                },
            }
        )
        run = Run(self, exp_id, name=doc.get("name", ""), challenge=doc.get("challenge"))
        epochs = [e for e in (doc.get("last_epoch"), last and last["epoch"]) if e is not None]
        run._last_epoch = max(epochs) if epochs else None
        run._latest_checkpoint = latest
        run._best_checkpoint = best
        self._runs.add(run)
        return run

    def get_run(self, experiment_id: str | ObjectId) -> dict[str, Any]:
        """The experiment document (status ``stale`` when a running run stopped beating)."""
        exp_id = to_object_id(experiment_id)
        doc = self._read(
            lambda: self.db[schema.EXPERIMENTS].find_one({"_id": exp_id}),
            f"read experiment {exp_id}",
        )
        if doc is None:
            raise NotFoundError(
                f"no experiment {exp_id} in database {self.db_name!r}; list runs with `eegfs runs list`"
            )
        return present(doc, utcnow(), self.stale_after_s)

    # --- checkpoints --------------------------------------------------------------------------
    def fetch_checkpoint(self, checkpoint: Mapping[str, Any], dest_dir: Path) -> Path:
        """A local file holding ``checkpoint``, verified against its sha256.

        The recorded path is returned when it exists here with the right checksum; otherwise
        the GridFS copy is downloaded to ``dest_dir/<file name>`` (atomically) and verified.

        Raises
        ------
        ChecksumMismatchError
            When the downloaded bytes do not match the recorded sha256.
        NotFoundError
            When the file is neither here nor in GridFS.
        """
        return self._read(
            lambda: fetch_file(
                self.db,
                path=checkpoint["path"],
                sha256=checkpoint.get("sha256"),
                gridfs_id=checkpoint.get("gridfs_id"),
                dest=Path(dest_dir) / Path(checkpoint["path"]).name,
                label=f"checkpoint {checkpoint.get('_id')} (epoch {checkpoint.get('epoch')})",
            ),
            f"fetch checkpoint {checkpoint.get('_id')}",
        )

    # --- queries and registry (thin wrappers; see tracking.queries / tracking.registry) -------
    def search_runs(self, **filters) -> list[dict[str, Any]]:
        """See :func:`tracking.queries.search_runs`."""
        from tracking import queries

        filters.setdefault("stale_after_s", self.stale_after_s)
        return self._read(lambda: queries.search_runs(self.db, **filters), "search runs")

    def best_runs(self, **kwargs) -> dict[int, list[dict[str, Any]]]:
        """See :func:`tracking.queries.best_runs`."""
        from tracking import queries

        return self._read(lambda: queries.best_runs(self.db, **kwargs), "find the best runs")

    def compare_runs(self, experiment_ids: Sequence[str | ObjectId], **kwargs) -> dict[str, Any]:
        """See :func:`tracking.queries.compare_runs`."""
        from tracking import queries

        return self._read(
            lambda: queries.compare_runs(self.db, experiment_ids, **kwargs), "compare runs"
        )

    def run_history(self, experiment_id: str | ObjectId) -> dict[str, Any]:
        """See :func:`tracking.queries.run_history`."""
        from tracking import queries

        return self._read(
            lambda: queries.run_history(self.db, experiment_id, stale_after_s=self.stale_after_s),
            "read run history",
        )

    def registry(self):
        """The :class:`tracking.registry.ModelRegistry` of this database (after queued writes)."""
        from tracking.registry import ModelRegistry

        self.flush(READ_FLUSH_TIMEOUT_S)
        return ModelRegistry(self.db)

    def register_model(self, name: str, checkpoint_id: str | ObjectId, **kwargs) -> dict[str, Any]:
        """See :meth:`tracking.registry.ModelRegistry.register`."""
        return self._read(
            lambda: self.registry().register(name, checkpoint_id, **kwargs), "register a model"
        )

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """See :meth:`tracking.registry.ModelRegistry.set_alias`."""
        self._read(lambda: self.registry().set_alias(name, alias, version), "move a model alias")

    def load_model(self, name: str, alias_or_version: str | int, dest: Path, **kwargs):
        """See :meth:`tracking.registry.ModelRegistry.load_model`."""
        return self._read(
            lambda: self.registry().load_model(name, alias_or_version, dest, **kwargs),
            "load a model",
        )


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
            self.finish("stopped", error=str(exc))
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("stopped", error="KeyboardInterrupt")
        elif issubclass(exc_type, SystemExit) and exc.code in (0, None):
            self._complete()
        else:
            self.finish(
                "failed",
                error=f"{exc_type.__name__}: {exc}",
                traceback="".join(tb_module.format_exception(exc_type, exc, tb)),
            )
        return False

    def _complete(self) -> None:
        """Mark the run completed, unless a hook says it may not (then failed, with why)."""
        guard = run_hooks().may_complete
        refusal = None if guard is None else guard(str(self.id))
        if refusal is None:
            self.finish("completed")
        else:
            self.finish("failed", error=refusal)

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

        ``is_best=True`` makes it the experiment's only best checkpoint (switched atomically).
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
                digest = copy_hashing(source, blob)
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
            self._submit(
                {"op": "checkpoint", "doc": doc, "blob": None if blob is None else str(blob)}
            )
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
        """Set summary metrics (merged into ``summary``; used by search, best and compare)."""
        values = clean_metrics(metrics, "set_summary metrics")
        if not values:
            return
        with self._lock:
            self._check_active()
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
        self, status: str = "completed", *, error: str | None = None, traceback: str | None = None
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
                    **({"where": {"status": RUNNING}} if status == "completed" else {}),
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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = ["Tracker", "Run", "CHALLENGES"]
