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
from tracking.ids import to_object_id
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
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    state = {"count": 0}

    def done() -> bool:
        if max_events is not None and state["count"] >= max_events:
            return True
        return deadline is not None and time.monotonic() >= deadline

    def finished() -> bool:
        if exp_id is None or not stop_when_finished:
            return False
        doc = db[EXPERIMENTS].find_one({"_id": exp_id}, {"status": 1})
        return doc is None or doc.get("status") != RUNNING

    match: dict[str, Any] = {} if exp_id is None else {"experiment_id": exp_id}
    stream = None
    if use_change_stream is not False:
        pipeline = [
            {
                "$match": {
                    "operationType": {"$in": ["insert", "update", "replace"]},
                    **{f"fullDocument.{k}": v for k, v in match.items()},
                }
            }
        ]
        try:
            stream = db[EPOCHS].watch(pipeline, full_document="updateLookup", max_await_time_ms=500)
        except OperationFailure as exc:
            if exc.code not in _NO_CHANGE_STREAM_CODES:
                raise
            log.info("change streams unavailable (%s); polling every %.1f s", exc, poll_interval_s)

    seen: dict[ObjectId, Any] = {}  # epoch _id -> logged_at of the version already yielded

    def fresh(doc: dict[str, Any]) -> bool:
        if seen.get(doc["_id"]) == doc.get("logged_at"):
            return False
        seen[doc["_id"]] = doc.get("logged_at")
        state["count"] += 1
        return True

    if include_existing and exp_id is not None:
        for doc in db[EPOCHS].find(match).sort("epoch", 1):
            if done():
                break
            if fresh(doc):
                yield doc
    cursor_time = None
    if stream is None:
        newest = db[EPOCHS].find_one(match, sort=[("logged_at", -1)])
        cursor_time = newest["logged_at"] if newest else None

    final = False
    try:
        while not done():
            if stream is not None:
                change = stream.try_next()
                if (
                    change is not None
                    and change.get("fullDocument")
                    and fresh(change["fullDocument"])
                ):
                    yield change["fullDocument"]
                    continue
                if change is None and finished():
                    # Epochs written just before the run finished may still be in flight.
                    while (change := stream.try_next()) is not None:
                        if change.get("fullDocument") and fresh(change["fullDocument"]):
                            yield change["fullDocument"]
                    return
            else:
                query = dict(match)
                if cursor_time is not None:
                    query["logged_at"] = {"$gte": cursor_time}
                new = False
                for doc in db[EPOCHS].find(query).sort("logged_at", 1):
                    cursor_time = doc["logged_at"]
                    if fresh(doc):
                        new = True
                        yield doc
                        if done():
                            return
                if not new:
                    if final:
                        return
                    # One more pass after the run finished picks up its last epochs.
                    final = finished()
                    if not final:
                        time.sleep(poll_interval_s)
    finally:
        if stream is not None:
            stream.close()
