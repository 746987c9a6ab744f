"""Eight processes logging at once lose nothing and duplicate nothing."""

from __future__ import annotations

import multiprocessing

from bson import ObjectId
from tracking_testlib import concurrent_writer, start_example_run

from tracking import Tracker

WRITERS = 8
EPOCHS = 6
STEPS = 250  # 1500 points per writer: two buckets each


def test_eight_processes_lose_and_duplicate_nothing(settings, db):
    with Tracker(settings) as tracker:
        shared = start_example_run(tracker, name="shared")
        assert tracker.flush() is True

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WRITERS) as pool:
        own_ids = pool.starmap(
            concurrent_writer,
            [(settings, str(shared.id), index, EPOCHS, STEPS) for index in range(WRITERS)],
        )
        # Let the workers exit on their own: the block's terminate() SIGTERMs them, and a worker
        # that catches SIGTERM (coverage's `sigterm = true` handler) can leave terminate() joining
        # it forever (cpython#78178).
        pool.close()
        pool.join()
    own_ids = [ObjectId(i) for i in own_ids]

    assert len(set(own_ids)) == WRITERS
    for index, run_id in enumerate(own_ids):
        doc = db.experiments.find_one({"_id": run_id})
        assert doc["status"] == "completed" and doc["name"] == f"writer-{index}"
        epochs = [e["epoch"] for e in db.epochs.find({"experiment_id": run_id}).sort("epoch")]
        assert epochs == list(range(EPOCHS))
        values = [
            p["values"]["loss"]
            for b in db.metrics.find({"experiment_id": run_id})
            for p in b["points"]
        ]
        expected = [float(index * 1e6 + s) for s in range(EPOCHS * STEPS)]
        assert sorted(values) == expected  # every point once: nothing lost, nothing doubled
        assert db.checkpoints.count_documents({"experiment_id": run_id, "is_best": True}) == 1

    shared_epochs = [e["epoch"] for e in db.epochs.find({"experiment_id": shared.id})]
    assert sorted(shared_epochs) == list(range(WRITERS * EPOCHS))  # epoch 0 written 8x, stored once
    assert db.checkpoints.count_documents({"experiment_id": shared.id}) == WRITERS
    best = list(db.checkpoints.find({"experiment_id": shared.id, "is_best": True}))
    assert len(best) == 1
    assert db.experiments.find_one({"_id": shared.id})["best_checkpoint"]["id"] == best[0]["_id"]
    assert db.experiments.count_documents({}) == WRITERS + 1
