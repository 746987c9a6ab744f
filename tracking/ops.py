"""Write operations of the tracker, as plain records that can be spooled and replayed.

Every tracker write is a dict ``{"op": kind, "db": database, ...}`` built in the caller's thread
(client-generated ObjectIds, timestamps taken at call time) and applied later by the background
writer, or replayed from a spool file. Each kind is idempotent, so applying a prefix of a
sequence twice and then the rest gives the same documents as applying it once:

``create``      ``$setOnInsert`` of the experiment document under its client-made ``_id``
``update``      ``$set`` / ``$max`` / ``$addToSet`` on one experiment (only where it also matches
                the op's optional ``where`` filter: a conditional ``completed``)
``epoch``       upsert on the unique (experiment_id, epoch) key: the latest values win
``metrics``     ``$push`` of one batch into a bounded bucket, guarded by the batch id
``checkpoint``  upsert by ``_id``; the best switched by tracking.best's ordered writes; optional
                GridFS upload

Every database handle comes from :func:`tracking.database.durable_database`, so each write is
acknowledged only once it is journaled (``w="majority", j=True`` on a replica set). The writer
sends the next write only after that acknowledgement, so after a server crash the stored writes
of a tracker are a prefix of the ones it made, and the rest are replayed from its queue/spool.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import gridfs
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from tracking.best import make_best
from tracking.database import durable_database
from tracking.schema import CHECKPOINTS, EPOCHS, EXPERIMENTS, GRIDFS_BUCKET, METRICS

OP_KINDS = ("create", "update", "epoch", "metrics", "checkpoint")

# Server error codes that mean "try again later", not "this write is wrong".
_TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


def is_transient(exc: BaseException) -> bool:
    """True for errors after which the same write should be retried once the server answers."""
    if isinstance(exc, ConnectionFailure):
        return True
    if isinstance(exc, PyMongoError) and (
        exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    ):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES


def _update_filter(op: dict[str, Any]) -> dict[str, Any]:
    return {**op.get("where", {}), "_id": op["id"]}


class OpApplier:
    """Applies op records to one MongoDB client (any database named in the records)."""

    def __init__(self, client) -> None:
        self.client = client
        self._databases: dict[str, Database] = {}

    def database(self, name: str) -> Database:
        """Database ``name`` with the durable write concern (made once, on first use)."""
        db = self._databases.get(name)
        if db is None:
            db = self._databases[name] = durable_database(self.client, name)
        return db

    def apply(self, op: dict[str, Any]) -> None:
        """Apply one op record idempotently; errors propagate (see :func:`is_transient`)."""
        db = self.database(op["db"])
        kind = op["op"]
        if kind == "create":
            doc = op["doc"]
            db[EXPERIMENTS].update_one(
                {"_id": doc["_id"]}, {"$setOnInsert": _without_id(doc)}, upsert=True
            )
        elif kind == "update":
            db[EXPERIMENTS].update_one(_update_filter(op), op["update"])
        elif kind == "epoch":
            self._apply_epoch(db, op)
        elif kind == "metrics":
            self._apply_metrics(db, op)
        elif kind == "checkpoint":
            self._apply_checkpoint(db, op)
        else:
            raise ValueError(f"unknown tracking op {kind!r}; expected one of {OP_KINDS}")

    def apply_many(self, ops: list[dict[str, Any]]) -> None:
        """Apply ``ops`` in order with few round trips, with the same result as one by one.

        Consecutive ops of one kind on one database are grouped: creates, updates and epochs
        become one ordered ``bulk_write`` each (plus one for the experiments they touch), step
        metric batches for one bucket become one ``$push``. A group that hits a duplicate key
        (a concurrent upsert, or a replay of a batch already stored) is redone op by op, which
        is idempotent. Checkpoints are applied alone (transaction, upload).

        Raises
        ------
        ApplyError
            Wrapping the first failure, with the index of the first op that may not be applied.
        """
        start = 0
        while start < len(ops):
            kind, db_name = ops[start]["op"], ops[start]["db"]
            end = start + 1
            if kind != "checkpoint":
                while end < len(ops) and ops[end]["op"] == kind and ops[end]["db"] == db_name:
                    end += 1
            group = ops[start:end]
            try:
                if len(group) == 1 or kind == "checkpoint":
                    for op in group:
                        self.apply(op)
                else:
                    try:
                        self._apply_group(self.database(db_name), kind, group)
                    except (DuplicateKeyError, BulkWriteError) as exc:
                        if not _is_duplicate_key(exc):
                            raise
                        for op in group:
                            self.apply(op)
            except Exception as exc:
                raise ApplyError(start, exc) from exc
            start = end

    def _apply_group(self, db: Database, kind: str, group: list[dict[str, Any]]) -> None:
        """Apply consecutive ops of one kind with one bulk write per collection."""
        apply_group = {
            "create": _create_group,
            "update": _update_group,
            "epoch": _epoch_group,
            "metrics": _metrics_group,
        }.get(kind)
        if apply_group is not None:
            apply_group(db, group)
            return
        for op in group:
            self.apply(op)

    # --- epochs -------------------------------------------------------------------------------
    @staticmethod
    def _apply_epoch(db: Database, op: dict[str, Any]) -> None:
        exp_id, epoch = op["experiment_id"], op["epoch"]
        # Two concurrent upserts on one unique key: one inserts, the other gets a duplicate key
        # error and, retried, becomes an update. Retrying is safe because $set is idempotent.
        for attempt in range(3):
            try:
                db[EPOCHS].update_one(
                    {"experiment_id": exp_id, "epoch": epoch}, _epoch_update(op), upsert=True
                )
                break
            except DuplicateKeyError:
                if attempt == 2:
                    raise
        db[EXPERIMENTS].bulk_write(_epoch_experiment_updates([op]))

    # --- step metrics -------------------------------------------------------------------------
    @staticmethod
    def _apply_metrics(db: Database, op: dict[str, Any]) -> None:
        _push_batches(db, [op], ignore_duplicate=True)
        if op.get("heartbeat") is not None:
            db[EXPERIMENTS].update_one(
                {"_id": op["experiment_id"]}, {"$max": {"heartbeat": op["heartbeat"]}}
            )

    # --- checkpoints --------------------------------------------------------------------------
    @staticmethod
    def _apply_checkpoint(db: Database, op: dict[str, Any]) -> None:
        doc = dict(op["doc"])
        is_best = bool(doc.pop("is_best", False))
        db[CHECKPOINTS].update_one(
            {"_id": doc["_id"]},
            {"$setOnInsert": {**_without_id(doc), "is_best": False}},
            upsert=True,
        )
        if is_best:
            # Ops spooled before "order" existed: the time of the log_checkpoint call.
            order = op.get("order") or int(doc["created_at"].timestamp() * 1e9)
            make_best(db, doc["experiment_id"], doc, order)
        if doc.get("gridfs_id") is not None:
            OpApplier._upload(db, doc, op.get("blob"))

    @staticmethod
    def _upload(db: Database, doc: dict[str, Any], blob: str | None) -> None:
        file_id = doc["gridfs_id"]
        files = db[f"{GRIDFS_BUCKET}.files"]
        if files.find_one({"_id": file_id}, {"_id": 1}) is not None:
            status = "uploaded"
        elif blob is None or not Path(blob).is_file():
            status = "missing: the snapshot taken for upload is gone"
        else:
            # A crash during an earlier upload leaves chunks without a files document.
            db[f"{GRIDFS_BUCKET}.chunks"].delete_many({"files_id": file_id})
            digest = hashlib.sha256()
            bucket = gridfs.GridFSBucket(db, bucket_name=GRIDFS_BUCKET)
            with (
                open(blob, "rb") as src,
                bucket.open_upload_stream_with_id(
                    file_id,
                    Path(doc["path"]).name,
                    metadata={
                        "kind": "checkpoint",
                        "sha256": doc["sha256"],
                        "experiment_id": doc["experiment_id"],
                        "checkpoint_id": doc["_id"],
                    },
                ) as dst,
            ):
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
            status = "uploaded"
            if digest.hexdigest() != doc["sha256"]:
                gridfs.GridFSBucket(db, bucket_name=GRIDFS_BUCKET).delete(file_id)
                status = f"failed: snapshot sha256 {digest.hexdigest()} != recorded {doc['sha256']}"
        db[CHECKPOINTS].update_one({"_id": doc["_id"]}, {"$set": {"upload_status": status}})
        if blob is not None and status == "uploaded":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(blob)


class ApplyError(Exception):
    """An op of a group failed; ops before ``index`` are applied, the rest may not be."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"op {index}: {type(cause).__name__}: {cause}")
        self.index = index
        self.cause = cause


def _create_group(db: Database, group: list[dict[str, Any]]) -> None:
    db[EXPERIMENTS].bulk_write(
        [
            UpdateOne(
                {"_id": op["doc"]["_id"]}, {"$setOnInsert": _without_id(op["doc"])}, upsert=True
            )
            for op in group
        ]
    )


def _update_group(db: Database, group: list[dict[str, Any]]) -> None:
    db[EXPERIMENTS].bulk_write([UpdateOne(_update_filter(op), op["update"]) for op in group])


def _epoch_group(db: Database, group: list[dict[str, Any]]) -> None:
    db[EPOCHS].bulk_write(
        [
            UpdateOne(
                {"experiment_id": op["experiment_id"], "epoch": op["epoch"]},
                _epoch_update(op),
                upsert=True,
            )
            for op in group
        ]
    )
    db[EXPERIMENTS].bulk_write(_epoch_experiment_updates(group))


def _metrics_group(db: Database, group: list[dict[str, Any]]) -> None:
    """Step-metric batches: one ``$push`` per run of batches for one bucket, then heartbeats."""
    buckets: list[list[dict[str, Any]]] = []
    for op in group:
        if buckets and buckets[-1][0]["bucket_id"] == op["bucket_id"]:
            buckets[-1].append(op)
        else:
            buckets.append([op])
    for ops in buckets:
        try:
            _push_batches(db, ops)
        except DuplicateKeyError:
            # Some of these batches are stored already (a replay): one by one, each batch id
            # guards itself.
            for op in ops:
                _push_batches(db, [op], ignore_duplicate=True)
    heartbeats: dict[Any, Any] = {}
    for op in group:
        if op.get("heartbeat") is not None:
            previous = heartbeats.get(op["experiment_id"], op["heartbeat"])
            heartbeats[op["experiment_id"]] = max(op["heartbeat"], previous)
    if heartbeats:
        db[EXPERIMENTS].bulk_write(
            [UpdateOne({"_id": k}, {"$max": {"heartbeat": v}}) for k, v in heartbeats.items()]
        )


def _is_duplicate_key(exc: BaseException) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return (
            bool(errors)
            and all(e.get("code") == 11000 for e in errors)
            and not exc.details.get("writeConcernErrors")
        )
    return False


def _epoch_update(op: dict[str, Any]) -> dict[str, Any]:
    return {
        "$set": {"metrics": op["metrics"], "logged_at": op["at"], "host": op.get("host")},
        "$setOnInsert": {
            "_id": op["id"],
            "experiment_id": op["experiment_id"],
            "epoch": op["epoch"],
        },
    }


def _epoch_experiment_updates(ops: list[dict[str, Any]]) -> list[UpdateOne]:
    """Experiment updates equivalent to applying the epoch ``ops`` in order: last epoch and
    its metrics (the highest epoch; among equal epochs the last logged), newest heartbeat."""
    last: dict[Any, dict[str, Any]] = {}
    beat: dict[Any, Any] = {}
    for op in ops:
        exp = op["experiment_id"]
        if exp not in last or op["epoch"] >= last[exp]["epoch"]:
            last[exp] = op
        beat[exp] = max(op["at"], beat.get(exp, op["at"]))
    updates = []
    for exp, op in last.items():
        updates.append(
            UpdateOne(
                {"_id": exp, "last_epoch": {"$not": {"$gt": op["epoch"]}}},
                {"$set": {"last_epoch": op["epoch"], "last_metrics": op["metrics"]}},
            )
        )
        updates.append(UpdateOne({"_id": exp}, {"$max": {"heartbeat": beat[exp]}}))
    return updates


def _push_batches(
    db: Database, ops: list[dict[str, Any]], *, ignore_duplicate: bool = False
) -> None:
    """Push the points of metric batches ``ops`` (all for one bucket) in one update.

    The bucket keeps the ids of the batches it holds; the filter skips the update when any of
    them is there already, and the upsert then fails on the bucket's _id (duplicate key).
    """
    batch_ids = [op["batch_id"] for op in ops]
    points = [p for op in ops for p in op["points"]]
    try:
        db[METRICS].update_one(
            {"_id": ops[0]["bucket_id"], "batch_ids": {"$nin": batch_ids}},
            {
                "$push": {"points": {"$each": points}, "batch_ids": {"$each": batch_ids}},
                "$inc": {"n": len(points)},
                "$min": {"first_step": min(op["first_step"] for op in ops)},
                "$max": {"last_step": max(op["last_step"] for op in ops)},
                "$setOnInsert": {"experiment_id": ops[0]["experiment_id"]},
            },
            upsert=True,
        )
    except DuplicateKeyError:
        # One batch: it is stored already, nothing to do. Several: the caller splits them.
        if not ignore_duplicate:
            raise


def _without_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}


def new_id() -> ObjectId:
    """A client-generated ObjectId (unique across processes and machines)."""
    return ObjectId()
