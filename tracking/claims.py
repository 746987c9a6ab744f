"""Claims: of several processes about to train the same run, exactly one does.

Used only by ``eegfs train --skip-if-done`` (``make train``, retries and reproductions record
new runs and never claim). A run's **identity** is the sha256 of its configuration, code commit
and feature snapshot (:func:`run_identity`); with uncommitted changes there is none, and the
caller trains and prints :attr:`RunIdentity.reason`.

A claim is one document of the ``claims`` collection whose ``_id`` is the identity, so the
unique ``_id`` index lets exactly one of several simultaneous inserts in, on any MongoDB,
without a transaction. The claim names the run its holder records (``run_id``, an experiment id
chosen at claim time and passed to ``Tracker.start_run(experiment_id=...)``), so a claimer that
loses always knows which run it defers to. The holder's liveness comes from the claim
(``heartbeat``) and from the run itself (its status and heartbeat, written by the tracker):

=========================================================  ==========================
the claim's run                                            a new claimer
=========================================================  ==========================
``completed`` (or the claim is ``completed``)              defers: done
``running`` and a heartbeat newer than ``stale_after_s``   defers: in progress
not recorded yet, claimed less than ``stale_after_s`` ago  defers: in progress
``failed`` / ``stopped`` (or the claim is ``failed``)      takes over
silent for ``stale_after_s`` (holder killed, machine off)  takes over
=========================================================  ==========================

A takeover is one compare-and-set on the claim's ``token`` (``find_one_and_update``), so of
several claimers taking over the same claim exactly one wins; the claim keeps the list of
takeovers.

Typical use (the runner)::

    identity = run_identity(config_dict, code=detect_git(), snapshot_id=served_snapshot)
    if identity.key is None:
        print(f"--skip-if-done: {identity.reason}; training anyway")   # and train
    else:
        with open_database(settings) as db:
            claim = claim_run(db, identity)
        if not claim.won:
            print(claim.reason)                                         # and stop
        else:
            run = tracker.start_run(..., experiment_id=claim.run_id)    # the claimed id
            ...                          # failure before start_run: release_claim(db, claim)
            complete_claim(db, claim)    # after the run finished
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from tracking.documents import redact_text
from tracking.errors import TrackingError, mongo_unavailable
from tracking.schema import CLAIMS, EXPERIMENTS
from tracking.status import COMPLETED, DEFAULT_STALE_AFTER_S, FAILED, STOPPED
from tracking.timeutil import utcnow

#: States of a claim document.
CLAIM_RUNNING, CLAIM_COMPLETED, CLAIM_FAILED = "running", "completed", "failed"
#: Compare-and-set rounds before giving up (each lost round means another claimer progressed).
MAX_ROUNDS = 20


@dataclass(frozen=True)
class RunIdentity:
    """What makes two trainings the same run; ``key`` is None when there is no way to tell."""

    key: str | None
    reason: str | None
    commit: str | None
    snapshot_id: str | None
    config_sha256: str


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_run`.

    ``won``: this process trains, recording the run ``run_id``. Otherwise ``run_id`` is the run
    it defers to, recorded by ``holder`` (``state`` ``running`` or ``completed``), and
    ``reason`` is one line saying so.
    """

    won: bool
    identity: str
    run_id: ObjectId
    state: str
    holder: dict[str, Any]
    reason: str
    token: ObjectId | None = None
    took_over: dict[str, Any] | None = field(default=None)


def run_identity(
    config: Mapping[str, Any], *, code: Mapping[str, Any], snapshot_id: str | None
) -> RunIdentity:
    """The identity of a training run: sha256 of its configuration, code commit and snapshot.

    Parameters
    ----------
    config:
        JSON-like configuration of what the run computes (leave out settings that do not
        change the result, such as the number of loader workers).
    code:
        ``{"commit", "dirty"}`` as :func:`tracking.gitinfo.detect_git` returns it.
    snapshot_id:
        The feature snapshot the run reads (None when it reads no feature store).

    Returns
    -------
    RunIdentity
        ``key`` None, with ``reason``, outside a git checkout or with uncommitted changes.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"run_identity(config=...) must be a dict, got {type(config).__name__}")
    config_sha = hashlib.sha256(_canonical(config).encode()).hexdigest()
    commit, dirty = code.get("commit"), code.get("dirty")
    reason = None
    if commit is None:
        reason = (
            "no git commit (not a git checkout, or git is missing), so the code cannot be "
            "identified"
        )
    elif dirty is None:
        reason = (
            f"git could not tell whether the tree at {commit[:12]} has uncommitted changes, so "
            "the code cannot be identified"
        )
    elif dirty:
        reason = (
            f"the git tree has uncommitted changes to tracked files (HEAD {commit[:12]}), so the "
            "code is not that commit; commit or stash them for --skip-if-done to apply"
        )
    key = None
    if reason is None:
        parts = {"config_sha256": config_sha, "commit": commit, "snapshot_id": snapshot_id}
        key = hashlib.sha256(_canonical(parts).encode()).hexdigest()
    return RunIdentity(key, reason, commit, snapshot_id, config_sha)


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def claim_run(
    db: Database,
    identity: RunIdentity,
    *,
    holder: Mapping[str, Any] | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> Claim:
    """Claim the run ``identity`` for this process, or learn which run to defer to.

    Parameters
    ----------
    db:
        The tracking database (e.g. from :func:`tracking.database.open_database`).
    identity:
        From :func:`run_identity`; its ``key`` must not be None.
    holder:
        Extra facts about this process stored in the claim (host, pid and user are added).
    stale_after_s:
        A holder silent for longer (neither the claim nor its run beating) is taken over.

    Raises
    ------
    ValueError
        For an identity without a key, or a non-positive ``stale_after_s``.
    TrackingUnavailableError
        When MongoDB does not answer.
    """
    if identity.key is None:
        raise ValueError(f"this run has no identity to claim: {identity.reason}")
    if stale_after_s <= 0:
        raise ValueError(f"stale_after_s must be positive seconds, got {stale_after_s}")
    me = {**redact_facts(holder or {}), **_this_process()}
    try:
        for _ in range(MAX_ROUNDS):
            claim = _try_insert(db, identity, me) or _judge(db, identity, me, stale_after_s)
            if claim is not None:
                return claim
    except ConnectionFailure as exc:
        raise mongo_unavailable(
            exc, None, f"claim run {identity.key[:12]}", then="or train without --skip-if-done"
        ) from exc
    raise TrackingError(
        f"claim {identity.key[:12]} changed hands {MAX_ROUNDS} times while this process tried to "
        "claim it; try again"
    )


def _this_process() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"host": socket.gethostname(), "pid": os.getpid(), "user": user}


def redact_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """``facts`` with string values' credentials masked (they are stored and printed)."""
    return {str(k): redact_text(v) if isinstance(v, str) else v for k, v in facts.items()}


def _try_insert(db: Database, identity: RunIdentity, me: dict[str, Any]) -> Claim | None:
    """Insert a new claim; None when one exists already."""
    now = utcnow()
    doc = {
        "_id": identity.key,
        "token": ObjectId(),
        "run_id": ObjectId(),
        "state": CLAIM_RUNNING,
        "holder": me,
        "claimed_at": now,
        "heartbeat": now,
        "commit": identity.commit,
        "snapshot_id": identity.snapshot_id,
        "config_sha256": identity.config_sha256,
        "takeovers": [],
    }
    try:
        db[CLAIMS].insert_one(doc)
    except DuplicateKeyError:
        return None
    return _won(doc, "claimed")


def _won(doc: dict[str, Any], reason: str, took_over: dict[str, Any] | None = None) -> Claim:
    return Claim(
        won=True,
        identity=doc["_id"],
        run_id=doc["run_id"],
        state=CLAIM_RUNNING,
        holder=doc["holder"],
        reason=reason,
        token=doc["token"],
        took_over=took_over,
    )


def _judge(
    db: Database, identity: RunIdentity, me: dict[str, Any], stale_after_s: float
) -> Claim | None:
    """Defer to the existing claim, or take it over; None when it changed meanwhile (retry)."""
    existing = db[CLAIMS].find_one({"_id": identity.key})
    if existing is None:
        return None  # released and deleted in between: insert again
    run = db[EXPERIMENTS].find_one(
        {"_id": existing["run_id"]}, {"status": 1, "heartbeat": 1, "ended_at": 1}
    )
    verdict, why = _verdict(existing, run, utcnow(), stale_after_s)
    if verdict == "defer":
        return Claim(
            won=False,
            identity=identity.key,
            run_id=existing["run_id"],
            state=CLAIM_COMPLETED if why == "done" else CLAIM_RUNNING,
            holder=existing["holder"],
            reason=_defer_reason(existing, why),
        )
    return _take_over(db, existing, me, why)


def _verdict(
    claim: dict[str, Any], run: dict[str, Any] | None, now: dt.datetime, stale_after_s: float
) -> tuple[str, str]:
    """("defer", "done" | "in progress") or ("take over", why)."""
    status = None if run is None else run.get("status")
    if claim.get("state") == CLAIM_COMPLETED or status == COMPLETED:
        return "defer", "done"
    if claim.get("state") == CLAIM_FAILED:
        return "take over", "its holder released it as failed"
    if status in (FAILED, STOPPED):
        return "take over", f"its run was recorded {status}"
    beats = [claim.get("heartbeat"), None if run is None else run.get("heartbeat")]
    last = max((b for b in beats if b is not None), default=claim.get("claimed_at"))
    silent_s = (now - last).total_seconds()
    if silent_s > stale_after_s:
        return "take over", f"its holder has been silent for {silent_s:.0f} s"
    return "defer", "in progress"


def _defer_reason(claim: dict[str, Any], why: str) -> str:
    holder = claim.get("holder") or {}
    if why == "done":
        return (
            f"an identical run is already recorded: experiment {claim['run_id']} (completed; "
            "same configuration, code commit and feature snapshot), not training again"
        )
    return (
        f"an identical run is being trained right now by {holder.get('host')} "
        f"(pid {holder.get('pid')}, claimed {claim['claimed_at']:%Y-%m-%d %H:%M:%S} UTC): "
        f"experiment {claim['run_id']}; not training it twice"
    )


def _take_over(
    db: Database, existing: dict[str, Any], me: dict[str, Any], why: str
) -> Claim | None:
    now = utcnow()
    previous = {
        "at": now,
        "run_id": existing["run_id"],
        "holder": existing.get("holder"),
        "reason": why,
    }
    doc = db[CLAIMS].find_one_and_update(
        {"_id": existing["_id"], "token": existing["token"]},
        {
            "$set": {
                "token": ObjectId(),
                "run_id": ObjectId(),
                "state": CLAIM_RUNNING,
                "holder": me,
                "claimed_at": now,
                "heartbeat": now,
            },
            "$push": {"takeovers": previous},
        },
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        return None  # another claimer changed it first: judge again
    return _won(
        doc, f"took over the claim of experiment {existing['run_id']} ({why})", took_over=previous
    )


def _holder_update(db: Database, claim: Claim, update: dict[str, Any], what: str) -> bool:
    """Apply ``update`` to ``claim`` if this process still holds it; False when it does not."""
    if not claim.won or claim.token is None:
        raise ValueError(f"cannot {what} a claim this process did not win ({claim.reason})")
    try:
        result = db[CLAIMS].update_one({"_id": claim.identity, "token": claim.token}, update)
    except ConnectionFailure as exc:
        raise mongo_unavailable(exc, None, f"{what} claim {claim.identity[:12]}") from exc
    return result.matched_count == 1


def heartbeat_claim(db: Database, claim: Claim) -> bool:
    """Say the holder is alive (needed only before its run beats, e.g. while data loads).

    Returns False when another process took the claim over meanwhile.
    """
    return _holder_update(db, claim, {"$max": {"heartbeat": utcnow()}}, "beat")


def complete_claim(db: Database, claim: Claim) -> bool:
    """The holder recorded its run: later claimers defer to it for good.

    Returns False when another process took the claim over meanwhile.
    """
    now = utcnow()
    return _holder_update(
        db,
        claim,
        {"$set": {"state": CLAIM_COMPLETED, "completed_at": now}, "$max": {"heartbeat": now}},
        "complete",
    )


def release_claim(db: Database, claim: Claim, *, error: str | None = None) -> bool:
    """The holder failed or gave up: the next claimer takes the claim over at once.

    Returns False when another process took the claim over meanwhile.
    """
    return _holder_update(
        db,
        claim,
        {
            "$set": {
                "state": CLAIM_FAILED,
                "released_at": utcnow(),
                "error": None if error is None else redact_text(str(error))[-10_000:],
            }
        },
        "release",
    )


__all__ = [
    "Claim",
    "RunIdentity",
    "claim_run",
    "complete_claim",
    "heartbeat_claim",
    "release_claim",
    "run_identity",
]
