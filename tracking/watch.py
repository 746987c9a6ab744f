"""Follow new epochs live: a change stream on ``epochs``, or polling where there is none.

Change streams need a replica set (real MongoDB from docker-compose, and secantusdb, are
one-node replica sets); a standalone server refuses them and :func:`watch_epochs` falls back to
polling ``logged_at``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tracking.errors import NotFoundError
from tracking.object_ids import to_object_id
from tracking.schema import EPOCHS, EXPERIMENTS
from tracking.status import RUNNING

log = logging.getLogger(__name__)

# Server answers meaning "no change streams here" (standalone server, old storage engine...).
_NO_CHANGE_STREAM_CODES = frozenset({40573, 136, 115, 20})


def watch_epochs(
    db: Database,
    experiment_id: str | ObjectId | None = None,
    *,
    include_existing: bool = True,
    use_change_stream: bool | None = None,
    poll_interval_s: float = 1.0,
    stop_when_finished: bool = True,
    timeout_s: float | None = None,
    max_events: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield epoch documents as they are logged (a re-logged epoch is yielded again).

    Parameters
    ----------
    experiment_id:
        One run to follow, or None for every run.
    include_existing:
        First yield the epochs already stored (of that run; of every run only when given an id).
    use_change_stream:
        None tries a change stream and falls back to polling; False always polls.
    stop_when_finished:
        With an id: stop once the run is no longer ``running`` and its epochs are all yielded.
    timeout_s, max_events:
        Stop after this many seconds or events (None: no limit).
    """
    exp_id = to_object_id(experiment_id) if experiment_id is not None else None
    if exp_id is not None and db[EXPERIMENTS].find_one({"_id": exp_id}, {"_id": 1}) is None:
        raise NotFoundError(f"no experiment {exp_id} to watch; list runs with `eegfs runs list`")
    watch = _EpochWatch(db, exp_id, stop_when_finished, timeout_s, max_events)
    stream = (
        _open_stream(db, watch.match, poll_interval_s) if use_change_stream is not False else None
    )
    try:
        if include_existing and exp_id is not None:
            yield from watch.existing()
        yield from watch.poll(poll_interval_s) if stream is None else watch.follow(stream)
    finally:
        if stream is not None:
            stream.close()


def _open_stream(db: Database, match: dict[str, Any], poll_interval_s: float):
    """A change stream on ``epochs`` matching ``match``, or None where there are none."""
    pipeline = [
        {
            "$match": {
                "operationType": {"$in": ["insert", "update", "replace"]},
                **{f"fullDocument.{k}": v for k, v in match.items()},
            }
        }
    ]
    try:
        return db[EPOCHS].watch(pipeline, full_document="updateLookup", max_await_time_ms=500)
    except OperationFailure as exc:
        if exc.code not in _NO_CHANGE_STREAM_CODES:
            raise
        log.info("change streams unavailable (%s); polling every %.1f s", exc, poll_interval_s)
        return None


class _EpochWatch:
    """The state of one :func:`watch_epochs`: what was yielded, and when to stop."""

    def __init__(
        self,
        db: Database,
        exp_id: ObjectId | None,
        stop_when_finished: bool,
        timeout_s: float | None,
        max_events: int | None,
    ) -> None:
        self.db = db
        self.exp_id = exp_id
        self.match: dict[str, Any] = {} if exp_id is None else {"experiment_id": exp_id}
        self.stop_when_finished = stop_when_finished
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.max_events = max_events
        self.count = 0
        self.seen: dict[ObjectId, Any] = {}  # epoch _id -> logged_at of the version yielded

    def done(self) -> bool:
        """The event limit or the deadline is reached."""
        if self.max_events is not None and self.count >= self.max_events:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def finished(self) -> bool:
        """The watched run is no longer running (never true when watching every run)."""
        if self.exp_id is None or not self.stop_when_finished:
            return False
        doc = self.db[EXPERIMENTS].find_one({"_id": self.exp_id}, {"status": 1})
        return doc is None or doc.get("status") != RUNNING

    def fresh(self, doc: dict[str, Any] | None) -> bool:
        """True (and counted) for an epoch document, or a new version of one, not yielded yet."""
        if not doc or self.seen.get(doc["_id"]) == doc.get("logged_at"):
            return False
        self.seen[doc["_id"]] = doc.get("logged_at")
        self.count += 1
        return True

    def existing(self) -> Iterator[dict[str, Any]]:
        for doc in self.db[EPOCHS].find(self.match).sort("epoch", 1):
            if self.done():
                return
            if self.fresh(doc):
                yield doc

    def follow(self, stream) -> Iterator[dict[str, Any]]:
        """Epochs from a change stream until done, or until the run finished."""
        while not self.done():
            change = stream.try_next()
            if change is not None:
                if self.fresh(change.get("fullDocument")):
                    yield change["fullDocument"]
                continue
            if self.finished():
                # Epochs written just before the run finished may still be in flight.
                while (change := stream.try_next()) is not None:
                    if self.fresh(change.get("fullDocument")):
                        yield change["fullDocument"]
                return

    def poll(self, interval_s: float) -> Iterator[dict[str, Any]]:
        """Epochs by polling ``logged_at`` until done, or one pass after the run finished."""
        newest = self.db[EPOCHS].find_one(self.match, sort=[("logged_at", -1)])
        cursor_time = newest["logged_at"] if newest else None
        final = False
        while not self.done():
            query = dict(self.match)
            if cursor_time is not None:
                query["logged_at"] = {"$gte": cursor_time}
            new = False
            for doc in self.db[EPOCHS].find(query).sort("logged_at", 1):
                cursor_time = doc["logged_at"]
                if self.fresh(doc):
                    new = True
                    yield doc
                    if self.done():
                        return
            if new:
                continue
            if final:
                return
            # One more pass after the run finished picks up its last epochs.
            final = self.finished()
            if not final:
                time.sleep(interval_s)
