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
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from services.connections import ServiceError, mask_uri, mongo_client
from services.settings import Settings
from tracking import schema
from tracking.database import durable_database
from tracking.documents import redact, redact_text, to_document
from tracking.errors import (
    NotFoundError,
    TrackingError,
    mongo_unavailable,
)
from tracking.fetch import fetch_file
from tracking.gitinfo import detect_git
from tracking.hooks import run_hooks
from tracking.object_ids import to_object_id
from tracking.run import Run
from tracking.spool import SpoolFile, default_spool_dir
from tracking.status import DEFAULT_STALE_AFTER_S, RUNNING, present
from tracking.timeutil import utcnow
from tracking.writer import Writer

log = logging.getLogger(__name__)

CHALLENGES = (1, 2)
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
        except ServiceError as exc:  # an address pymongo cannot parse
            raise TrackingError(str(exc)) from exc
        self._db: Database | None = None
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
    def db(self) -> Database:
        """The tracking database, with the durable write concern (tracking/database.py).

        Made when first used (the server must answer then: it decides the write concern).
        """
        if self._db is None:
            self._db = durable_database(self.client, self.db_name)
        return self._db

    @property
    def acknowledged(self) -> int:
        """Writes (op records) MongoDB has acknowledged so far, durably (tracking/database.py)."""
        return self._writer.applied

    @property
    def rejected(self) -> int:
        """Writes MongoDB refused for good (set aside in ``rejected-<pid>.jsonl``)."""
        return self._writer.rejected

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

        Returns True when every write made so far is acknowledged by MongoDB, which means
        durable: each one is journaled (``w="majority", j=True`` on a replica set, ``j=True``
        on a standalone server) and survives a server crash. False when some writes wait in the
        spool (replayed later), when MongoDB refused one for good (:attr:`rejected`), or when
        ``timeout_s`` passed first.
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
            raise mongo_unavailable(
                self._writer.last_exception or TimeoutError(self._writer.last_error),
                self.settings.mongo_uri,
                what,
                then=f"writes are kept in {self._spool.path}",
            )
        try:
            return fn()
        except ConnectionFailure as exc:
            raise mongo_unavailable(exc, self.settings.mongo_uri, what) from exc

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
        experiment_id: str | ObjectId | None = None,
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
        experiment_id:
            The id to record the run under (default: a new one); ``Claim.run_id`` of a claim
            won with :func:`tracking.claims.claim_run`, so that claimers who lost name this run.
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
            "_id": ObjectId() if experiment_id is None else to_object_id(experiment_id),
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
            return doc, last, latest, _best_checkpoint(self.db, doc)

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

    def record_reproduction(self, experiment_id: str | ObjectId, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` (a reproduction's outcome) to the run's ``reproductions`` list.

        Raises
        ------
        InvalidIdError, NotFoundError
            For a malformed or unknown id.
        """
        exp_id = to_object_id(experiment_id)
        self.get_run(exp_id)
        doc = to_document(redact({"id": str(ObjectId()), **dict(entry)}), "reproductions")
        self._submit(
            {
                "op": "update",
                "id": exp_id,
                "where": {"reproductions.id": {"$ne": doc["id"]}},  # a replay pushes nothing
                "update": {"$push": {"reproductions": doc}},
            }
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


def _best_checkpoint(db: Database, experiment: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint ``best_checkpoint`` names (the source of truth, see tracking/best.py), or the
    one flagged ``is_best`` for runs recorded without that field (migrated)."""
    pointer = (experiment.get("best_checkpoint") or {}).get("id")
    if pointer is not None:
        return db[schema.CHECKPOINTS].find_one({"_id": pointer})
    return db[schema.CHECKPOINTS].find_one({"experiment_id": experiment["_id"], "is_best": True})


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = ["Tracker", "Run", "CHALLENGES"]
