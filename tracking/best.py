"""A run's best checkpoint: one source of truth, switched by a transaction-free order of writes.

**The source of truth** is the experiment document's ``best_checkpoint`` field
(``{id, epoch, metrics, order}``). ``summary.best_epoch`` is derived from it: it is written only
in the same single-document update that moves ``best_checkpoint`` (MongoDB applies an update to
one document atomically, with no transaction), so a run's summary and its best checkpoint can
never disagree, whatever moment a crash picks. ``Run.set_summary`` therefore never writes
``best_epoch`` itself when the run has a best checkpoint (and refuses a different value).

**The order of writes** when checkpoint C becomes the best (each write acknowledged durably,
see tracking/database.py, before the next is sent):

1. the checkpoint document C is inserted with ``is_best: false``
   -> ``best_checkpoint`` never names a checkpoint that is not stored;
2. ``is_best`` is unset on every other checkpoint of the run
   -> from here until 4 the run has no flagged checkpoint, never a wrong one;
3. ``best_checkpoint`` and ``summary.best_epoch`` move to C in one update, unless a newer best
   is there already (``order``, increasing per process): a replayed old write never moves
   them back;
4. ``is_best`` is set on the checkpoint ``best_checkpoint`` names, and the pointer is read
   again; if it moved meanwhile (another process switched the best of the same run), 2-4 are
   repeated for the new one. The unique partial index on ``is_best`` keeps one flag at most.

So after a crash between any two of these writes, with one writer per run, the flag is either
on the checkpoint ``best_checkpoint`` names or on none; the tracker replays the whole op when
the server is back (every step is idempotent), which sets it. Readers take the best from
``best_checkpoint`` (``Tracker.resume_run``, ``queries.run_history``). Transactions are not used:
a standalone server has none, and one ordering is simpler to reason about than two code paths.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from tracking.errors import TrackingError
from tracking.schema import CHECKPOINTS, EXPERIMENTS

#: Tries to make the flags follow a pointer that other processes keep moving.
MAX_FLAG_ROUNDS = 50

_order_lock = threading.Lock()
_last_order = 0


def next_order() -> int:
    """A number larger than every one this process returned before (nanoseconds since 1970).

    Orders best-checkpoint switches: within a process strictly in call order; between
    processes by wall-clock time.
    """
    global _last_order
    with _order_lock:
        _last_order = max(time.time_ns(), _last_order + 1)
        return _last_order


def make_best(
    db: Database, experiment_id: ObjectId, checkpoint: dict[str, Any], order: int
) -> None:
    """Make the stored checkpoint ``checkpoint`` its run's best (steps 2-4 of the module doc).

    ``checkpoint`` is the checkpoint document (``_id``, ``epoch``, ``metrics``). Idempotent: a
    second call, or a call older (``order``) than the current best, changes nothing but the
    flags, which it aligns with the pointer.
    """
    ckpt_id = checkpoint["_id"]
    current = _pointer(db, experiment_id)
    if current is not None and current.get("id") != ckpt_id and current.get("order", 0) > order:
        _follow_pointer(db, experiment_id)  # an old write replayed: the newer best stays
        return
    _unflag_others(db, experiment_id, ckpt_id)
    pointer = {
        "id": ckpt_id,
        "epoch": checkpoint.get("epoch"),
        "metrics": checkpoint.get("metrics"),
        "order": order,
    }
    db[EXPERIMENTS].update_one(
        {"_id": experiment_id, "best_checkpoint.order": {"$not": {"$gt": order}}},
        {"$set": {"best_checkpoint": pointer, "summary.best_epoch": pointer["epoch"]}},
    )
    _follow_pointer(db, experiment_id)


def _pointer(db: Database, experiment_id: ObjectId) -> dict[str, Any] | None:
    doc = db[EXPERIMENTS].find_one({"_id": experiment_id}, {"best_checkpoint": 1})
    return None if doc is None else doc.get("best_checkpoint")


def _unflag_others(db: Database, experiment_id: ObjectId, keep: ObjectId) -> None:
    db[CHECKPOINTS].update_many(
        {"experiment_id": experiment_id, "is_best": True, "_id": {"$ne": keep}},
        {"$set": {"is_best": False}},
    )


def _follow_pointer(db: Database, experiment_id: ObjectId) -> None:
    """Put ``is_best`` on the checkpoint ``best_checkpoint`` names, and on no other."""
    for _ in range(MAX_FLAG_ROUNDS):
        target = (_pointer(db, experiment_id) or {}).get("id")
        if target is None:
            return
        _unflag_others(db, experiment_id, target)
        try:
            db[CHECKPOINTS].update_one({"_id": target}, {"$set": {"is_best": True}})
        except DuplicateKeyError:
            continue  # another process flagged its checkpoint in between: look again
        if (_pointer(db, experiment_id) or {}).get("id") == target:
            return
    raise TrackingError(
        f"experiment {experiment_id}: the best checkpoint kept moving while its is_best flag was "
        f"being set ({MAX_FLAG_ROUNDS} rounds); the experiment's best_checkpoint field is right "
        "and the flags follow it at the next best checkpoint"
    )
