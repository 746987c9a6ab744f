"""A run's summary and its best checkpoint never disagree (tracking/best.py).

Promise (docs/tracking.md): the experiment's ``best_checkpoint`` is the source of truth;
``summary.best_epoch`` is written only in the same single-document update, a replayed older
switch never moves the best back, and the ``is_best`` flags follow the pointer (after a crash
in the middle of a switch a flag may be missing, never wrong). The crashes themselves are in
tests/faults/test_fault_mongo_crash.py; here each step is checked on its own.
"""

from __future__ import annotations

import pytest
from tracking_testlib import start_example_run

from tracking import Tracker
from tracking.best import make_best, next_order
from tracking.queries import run_history


def _checkpoints(run, tmp_path, epochs_and_best):
    ids = {}
    for epoch, is_best in epochs_and_best:
        path = tmp_path / f"epoch{epoch}.pt"
        path.write_bytes(f"weights {epoch}".encode())
        ids[epoch] = run.log_checkpoint(
            path, epoch=epoch, metrics={"val_loss": 1.0 / (epoch + 1)}, is_best=is_best
        )
    return ids


def _flags(db, run_id):
    return [c["epoch"] for c in db.checkpoints.find({"experiment_id": run_id, "is_best": True})]


def test_best_epoch_is_written_with_the_best_checkpoint(tracker, db, tmp_path):
    run = start_example_run(tracker)
    ids = _checkpoints(run, tmp_path, [(0, True), (1, False), (2, True), (3, False)])
    assert tracker.flush() is True
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["best_checkpoint"]["id"] == ids[2] and doc["best_checkpoint"]["epoch"] == 2
    assert doc["summary"] == {"best_epoch": 2}  # without any set_summary call
    assert _flags(db, run.id) == [2]
    # set_summary may repeat the best epoch (training does), but not contradict it.
    run.set_summary({"best_epoch": 2.0, "val_loss": 0.33})
    with pytest.raises(ValueError, match=r"best_epoch=1 disagrees .* \(epoch 2"):
        run.set_summary({"best_epoch": 1, "val_loss": 0.5})
    assert tracker.flush() is True
    assert db.experiments.find_one({"_id": run.id})["summary"] == {
        "best_epoch": 2,
        "val_loss": 0.33,
    }


def test_a_run_without_best_checkpoint_keeps_its_own_best_epoch(tracker, db):
    run = start_example_run(tracker)
    run.set_summary({"best_epoch": 4, "val_loss": 0.2})
    assert tracker.flush() is True
    assert db.experiments.find_one({"_id": run.id})["summary"]["best_epoch"] == 4


def test_a_replayed_older_switch_never_moves_the_best_back(tracker, db, tmp_path):
    run = start_example_run(tracker)
    older_order = next_order()
    ids = _checkpoints(run, tmp_path, [(0, True), (1, True)])
    assert tracker.flush() is True
    older = db.checkpoints.find_one({"_id": ids[0]})
    # The switch to epoch 0 applied again after the one to epoch 1 (a spool replayed twice).
    make_best(tracker.db, run.id, older, older_order)
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["best_checkpoint"]["epoch"] == 1 and doc["summary"]["best_epoch"] == 1
    assert _flags(db, run.id) == [1]


def test_flags_lagging_after_a_crash_are_repaired_and_never_misread(tracker, db, tmp_path):
    run = start_example_run(tracker)
    ids = _checkpoints(run, tmp_path, [(0, True), (1, True)])
    assert tracker.flush() is True
    # The state a crash between steps 2 and 4 of a switch leaves: no flag, pointer on epoch 1.
    db.checkpoints.update_many({"experiment_id": run.id}, {"$set": {"is_best": False}})
    history = run_history(db, run.id)
    assert [c["is_best"] for c in history["checkpoints"]] == [False, True]
    with Tracker(tracker.settings) as other:
        resumed = other.resume_run(run.id)
        assert resumed.best_checkpoint()["_id"] == ids[1]
    # Replaying the interrupted switch (what the tracker does when the server is back) sets it.
    make_best(tracker.db, run.id, db.checkpoints.find_one({"_id": ids[1]}), next_order())
    assert _flags(db, run.id) == [1]


def test_a_switch_interrupted_before_the_pointer_moved_is_finished_by_its_replay(
    tracker, db, tmp_path
):
    run = start_example_run(tracker)
    ids = _checkpoints(run, tmp_path, [(0, True), (1, False)])
    assert tracker.flush() is True
    # Step 2 of switching to epoch 1 happened (old flag unset), step 3 did not.
    db.checkpoints.update_one({"_id": ids[0]}, {"$set": {"is_best": False}})
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["best_checkpoint"]["epoch"] == doc["summary"]["best_epoch"] == 0
    make_best(tracker.db, run.id, db.checkpoints.find_one({"_id": ids[1]}), next_order())
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["best_checkpoint"]["epoch"] == doc["summary"]["best_epoch"] == 1
    assert _flags(db, run.id) == [1]
