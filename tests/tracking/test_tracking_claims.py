"""Claims for ``--skip-if-done``: of several processes about to train the same run, exactly one does.

Promise (docs/tracking.md, "Claims"): claimers released together (threads or processes) get one
winner; every loser names the run it defers to; a holder that failed, released its claim or
went silent is taken over (by exactly one claimer); with uncommitted changes there is no
identity and the caller is told why.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from bson import ObjectId
from tracking_testlib import start_example_run

from tracking import Tracker
from tracking.claims import (
    claim_run,
    complete_claim,
    heartbeat_claim,
    release_claim,
    run_identity,
)
from tracking.database import open_database

ROUNDS = 5
COMMIT = "a" * 40
CLEAN = {"commit": COMMIT, "dirty": False}


def _identity(round_no: int = 0, snapshot: str = "snap-1"):
    return run_identity(
        {"model": "EEGNeX", "lr": 0.002, "round": round_no}, code=CLEAN, snapshot_id=snapshot
    )


def _race(settings, identity, n: int = 2, **kwargs):
    """``n`` threads, each with its own connection, released together by a barrier."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def claimer(index: int) -> None:
        try:
            with open_database(settings) as db:
                barrier.wait()
                results[index] = claim_run(db, identity, holder={"thread": index}, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return results


def _one_winner(results):
    winners = [c for c in results if c.won]
    losers = [c for c in results if not c.won]
    assert len(winners) == 1, results
    for loser in losers:
        assert loser.run_id == winners[0].run_id
        assert str(winners[0].run_id) in loser.reason
    return winners[0], losers


def test_identity_is_the_configuration_the_commit_and_the_snapshot():
    a = _identity()
    assert a.key is not None and len(a.key) == 64 and a.reason is None
    assert (
        run_identity(
            {"round": 0, "lr": 0.002, "model": "EEGNeX"}, code=CLEAN, snapshot_id="snap-1"
        ).key
        == a.key
    )
    assert _identity(snapshot="snap-2").key != a.key
    assert _identity(round_no=1).key != a.key
    other_commit = run_identity(
        {"model": "EEGNeX", "lr": 0.002, "round": 0},
        code={"commit": "b" * 40, "dirty": False},
        snapshot_id="snap-1",
    )
    assert other_commit.key != a.key


def test_a_dirty_tree_or_no_git_has_no_identity_and_says_why(settings):
    dirty = run_identity({"lr": 1}, code={"commit": COMMIT, "dirty": True}, snapshot_id=None)
    assert (
        dirty.key is None and "uncommitted changes" in dirty.reason and COMMIT[:12] in dirty.reason
    )
    no_git = run_identity({"lr": 1}, code={"commit": None, "dirty": None}, snapshot_id=None)
    assert no_git.key is None and "no git commit" in no_git.reason
    with open_database(settings) as db, pytest.raises(ValueError, match="uncommitted changes"):
        claim_run(db, dirty)


def test_two_threads_released_together_one_wins_five_times(settings, db):
    for round_no in range(ROUNDS):
        winner, (loser,) = _one_winner(_race(settings, _identity(round_no)))
        assert "being trained right now" in loser.reason
    assert db.claims.count_documents({}) == ROUNDS


def _claimer_process(settings, barrier, results, index: int) -> None:
    """One claimer process: ROUNDS claims, each released together with the other process."""
    with open_database(settings) as db:
        for round_no in range(ROUNDS):
            barrier.wait(60)
            claim = claim_run(db, _identity(round_no), holder={"process": index})
            results.put((round_no, claim.won, str(claim.run_id), claim.reason))


def test_two_processes_released_together_one_wins_five_times(settings):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    processes = [
        ctx.Process(target=_claimer_process, args=(settings, barrier, results, i)) for i in range(2)
    ]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * ROUNDS)]
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    for round_no in range(ROUNDS):
        these = [o for o in outcomes if o[0] == round_no]
        assert sorted(won for _, won, _, _ in these) == [False, True]
        (run_id,) = {r for _, _, r, _ in these}  # the loser names the winner's run
        loser_reason = next(reason for _, won, _, reason in these if not won)
        assert run_id in loser_reason


def test_the_winner_records_the_claimed_run_and_later_claimers_defer_to_it(settings, db):
    identity = _identity()
    with open_database(settings) as cdb:
        claim = claim_run(cdb, identity)
        assert claim.won and claim.reason == "claimed"
        with Tracker(settings) as tracker:
            run = start_example_run(tracker, experiment_id=claim.run_id)
            assert run.id == claim.run_id
            run.log_epoch(0, {"val_loss": 1.0})
            assert tracker.flush() is True
            running = claim_run(cdb, identity)
            assert not running.won and running.run_id == claim.run_id
            assert "being trained right now" in running.reason
            run.finish()
            assert tracker.flush() is True
        # The run is completed: deferred to for good, even before complete_claim.
        done = claim_run(cdb, identity)
        assert not done.won and "already recorded: experiment " + str(claim.run_id) in done.reason
        assert complete_claim(cdb, claim) is True
        assert claim_run(cdb, identity).state == "completed"
        with pytest.raises(ValueError, match="did not win"):
            complete_claim(cdb, done)


def test_a_failed_run_or_a_released_claim_is_taken_over(settings, db):
    with open_database(settings) as cdb:
        first = claim_run(cdb, _identity(0))
        with Tracker(settings) as tracker:
            with (
                pytest.raises(RuntimeError),
                start_example_run(tracker, experiment_id=first.run_id),
            ):
                raise RuntimeError("diverged")
            assert tracker.flush() is True
        second = claim_run(cdb, _identity(0))
        assert second.won and second.run_id != first.run_id
        assert second.took_over["run_id"] == first.run_id
        assert "recorded failed" in second.reason
        assert complete_claim(cdb, first) is False  # the first holder lost its claim

        before_run = claim_run(cdb, _identity(1))  # failed while loading data: no run yet
        assert release_claim(cdb, before_run, error="no such file: R5.h5") is True
        after = claim_run(cdb, _identity(1))
        assert after.won and "released it as failed" in after.reason
    doc = db.claims.find_one({"_id": _identity(1).key})
    assert [t["run_id"] for t in doc["takeovers"]] == [before_run.run_id]


def test_a_silent_holder_is_taken_over_by_exactly_one_claimer(settings, db):
    with open_database(settings) as cdb:
        silent = claim_run(cdb, _identity())
        assert heartbeat_claim(cdb, silent) is True
        young = claim_run(cdb, _identity(), stale_after_s=60)
        assert not young.won and young.run_id == silent.run_id
    time.sleep(2.5)  # the holder was killed: no claim heartbeat, no run
    winner, (loser,) = _one_winner(_race(settings, _identity(), stale_after_s=2.0))
    assert winner.took_over["run_id"] == silent.run_id and "silent for" in winner.reason
    assert loser.run_id == winner.run_id
    with open_database(settings) as cdb:
        assert heartbeat_claim(cdb, silent) is False
    assert isinstance(winner.run_id, ObjectId)
