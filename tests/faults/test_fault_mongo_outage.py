"""A MongoDB outage across a tracked run: writes are spooled, replayed exactly once, nothing lost.

Promises (README "Reliability", docs/tracking.md "When MongoDB is away"):

1. While MongoDB is away, tracking calls keep returning at once; the writes go to an fsynced
   spool and are replayed when the server answers again, so the stored run equals a control
   run recorded with the server up all along: nothing lost, nothing stored twice (an op that
   was in flight when the server died is applied again, idempotently). Checked with the server
   stopped between two writes (SIGTERM) and SIGKILLed while the tracker is writing.
2. A process that exits while MongoDB is away leaves its spool; ``eegfs runs sync`` replays it
   once (a second sync finds nothing), skips the spool of a live tracker, and sets aside a
   write MongoDB rejects instead of blocking the writes after it.

(Moved here from tests/tracking/test_tracking_outage.py when the fault suite was created.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gridfs
import pytest
from bson import ObjectId
from faults_testlib import sigkill, start_example_run, wait_synced

from services.connections import mongo_client
from services.local import free_port, stop_process
from services.settings import Settings
from tracking import Tracker, TrackingUnavailableError
from tracking.spool import SPOOL_GLOB
from tracking.sync import sync_spool

REPO = Path(__file__).resolve().parents[2]


def _phase(run, tmp_path: Path, epochs: range, label: str) -> None:
    for epoch in epochs:
        for i in range(150):
            step = epoch * 150 + i
            run.log_metrics({"loss": 1.0 / (step + 1), "grad_norm": step % 7}, step=step)
        run.log_epoch(epoch, {"train_loss": 1.0 / (epoch + 1), "val_loss": 1.5 / (epoch + 1)})
        run.heartbeat()
        if epoch % 2 == 1:
            path = tmp_path / label / f"epoch{epoch}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"weights of epoch {epoch}".encode() * 1000)
            run.log_checkpoint(
                path,
                epoch=epoch,
                metrics={"val_loss": 1.5 / (epoch + 1)},
                is_best=True,
                upload=True,
            )
    run.log_epoch(epochs[0], {"train_loss": 9.0, "val_loss": 9.0})  # a re-logged epoch
    run.log_epoch(
        epochs[0], {"train_loss": 1.0 / (epochs[0] + 1), "val_loss": 1.5 / (epochs[0] + 1)}
    )


def _snapshot(database, run_id: ObjectId) -> dict:
    """The stored run without ids, hosts and times (which differ between two runs by design)."""
    exp = database.experiments.find_one({"_id": run_id})
    volatile = {
        "_id",
        "started_at",
        "ended_at",
        "heartbeat",
        "pid",
        "host",
        "best_checkpoint",
        "log",
    }
    experiment = {k: v for k, v in exp.items() if k not in volatile}
    epochs = [
        (e["epoch"], e["metrics"])
        for e in database.epochs.find({"experiment_id": run_id}).sort("epoch")
    ]
    points = sorted(
        (p["step"], tuple(sorted(p["values"].items())))
        for b in database.metrics.find({"experiment_id": run_id})
        for p in b["points"]
    )
    bucket_sizes_ok = all(
        b["n"] == len(b["points"]) <= 1000 for b in database.metrics.find({"experiment_id": run_id})
    )
    fs = gridfs.GridFSBucket(database)
    checkpoints = []
    for c in database.checkpoints.find({"experiment_id": run_id}).sort("epoch"):
        blob = fs.open_download_stream(c["gridfs_id"]).read()
        checkpoints.append(
            (
                c["epoch"],
                c["sha256"],
                c["size_bytes"],
                c["is_best"],
                c["metrics"],
                c["upload_status"],
                blob,
            )
        )
    return {
        "experiment": experiment,
        "epochs": epochs,
        "points": points,
        "bucket_sizes_ok": bucket_sizes_ok,
        "checkpoints": checkpoints,
        "log": exp["log"]["text"],
        "best_epoch": exp["best_checkpoint"]["epoch"],
    }


def _kill_while_writing(server, run_id: ObjectId) -> None:
    """SIGKILL ``server`` once the writer has stored epoch 5 (its later writes are in flight)."""
    client = mongo_client(server.uri)
    try:
        deadline = time.monotonic() + 60
        while client["outage_run"].epochs.find_one({"experiment_id": run_id, "epoch": 5}) is None:
            assert time.monotonic() < deadline, "the writer never stored epoch 5"
            time.sleep(0.001)
    finally:
        client.close()
    sigkill(server.pid)


def _control_run(settings: Settings, tmp_path: Path) -> ObjectId:
    """The calls of the outage test with the server up all along; the run's id."""
    with Tracker(settings) as control:
        run = start_example_run(control, name="same-run")
        _phase(run, tmp_path, range(0, 4), "control")
        _phase(run, tmp_path, range(4, 8), "control")
        run.set_summary({"val_loss": 0.19})
        run.attach_log("epoch logs\n")
        _phase(run, tmp_path, range(8, 10), "control")
        run.finish()
        assert control.flush() is True
    return run.id


@pytest.mark.parametrize("outage", ["stopped between writes", "killed while writing"])
def test_an_outage_across_a_run_loses_and_duplicates_nothing(outage, start_local_mongo, tmp_path):
    """The run recorded across an outage equals the same run recorded with the server up."""
    server = start_local_mongo()
    base = Settings(mongo_uri=server.uri, data_dir=tmp_path / "data")
    outage_settings = base.with_overrides(mongo_db="outage_run")
    control_id = _control_run(base.with_overrides(mongo_db="control_run"), tmp_path)

    tracker = Tracker(outage_settings)
    try:
        run = start_example_run(tracker, name="same-run")
        _phase(run, tmp_path, range(0, 4), "outage")
        assert tracker.flush() is True
        before = tracker.acknowledged

        if outage == "stopped between writes":
            stop_process(server.pid)  # SIGTERM, nothing in flight
            _phase(run, tmp_path, range(4, 8), "outage")
        else:
            _phase(run, tmp_path, range(4, 8), "outage")  # queued at once, written one by one
            _kill_while_writing(server, run.id)
        run.set_summary({"val_loss": 0.19})
        run.attach_log("epoch logs\n")
        assert tracker.flush() is False  # spooled, not applied
        assert tracker.spool_path.exists() and tracker.spool_path.stat().st_size > 0
        with pytest.raises(TrackingUnavailableError, match="does not answer"):
            tracker.get_run(run.id)
        during = tracker.acknowledged - before

        restarted = start_local_mongo(port=server.port, workdir=server.data_dir)
        assert restarted.uri == server.uri
        _phase(run, tmp_path, range(8, 10), "outage")
        run.finish()
        assert wait_synced(tracker), "the spool was not replayed after the server came back"
        assert not tracker.spool_path.exists()
        assert tracker.get_run(run.id)["status"] == "completed"
        print(
            f"outage ({outage}): {during} write ops acknowledged between the last flush and the "
            f"outage, the rest spooled; {tracker.acknowledged} acknowledged in all after replay"
        )
    finally:
        tracker.close()

    client = mongo_client(server.uri)
    try:
        outage = _snapshot(client["outage_run"], run.id)
        expected = _snapshot(client["control_run"], control_id)
        assert outage["bucket_sizes_ok"] and expected["bucket_sizes_ok"]
        assert len(outage["epochs"]) == 10 and len(outage["points"]) == 1500
        assert outage == expected
    finally:
        client.close()


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.settings import Settings
    from tracking import Tracker

    settings = Settings(mongo_uri=sys.argv[1], mongo_db=sys.argv[2], data_dir=Path(sys.argv[3]))
    tracker = Tracker(settings)
    run = tracker.start_run("offline", 1, model={"name": "m"}, config={"lr": 0.1}, data={},
                            features={}, code={"commit": None, "dirty": None})
    for epoch in range(5):
        for step in range(20):
            run.log_metrics({"loss": float(step)}, step=epoch * 20 + step)
        run.log_epoch(epoch, {"val_loss": 1.0 / (epoch + 1)})
    run.finish()
    print(run.id)
    # no tracker.close(): the exit handler must leave the spool behind
    """
)


def test_process_exiting_offline_leaves_its_spool_for_runs_sync(settings, db, tmp_path):
    """A process that exits offline leaves its spool; `runs sync` replays it exactly once."""
    dead_uri = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _OFFLINE_SCRIPT,
            dead_uri,
            settings.mongo_db,
            str(settings.data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    run_id = ObjectId(result.stdout.strip().splitlines()[-1])
    spool_dir = settings.data_dir / "tracking" / "spool"
    files = list(spool_dir.glob(SPOOL_GLOB))
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert db.experiments.find_one({"_id": run_id}) is None

    report = sync_spool(settings)
    assert report.replayed_files == files and report.rejected == 0
    assert not list(spool_dir.glob(SPOOL_GLOB))
    doc = db.experiments.find_one({"_id": run_id})
    assert doc["status"] == "completed" and doc["last_epoch"] == 4
    assert db.epochs.count_documents({"experiment_id": run_id}) == 5
    steps = [p["step"] for b in db.metrics.find({"experiment_id": run_id}) for p in b["points"]]
    assert sorted(steps) == list(range(100))
    # Replaying again is a no-op (idempotent) and finds nothing to do.
    assert sync_spool(settings).applied == 0


def test_sync_skips_the_spool_of_a_live_tracker(settings, tmp_path):
    """`runs sync` never replays the spool a live tracker is still writing."""
    dead = settings.with_overrides(mongo_uri=f"mongodb://127.0.0.1:{free_port()}/")
    tracker = Tracker(dead, spool_dir=settings.data_dir / "tracking" / "spool")
    try:
        start_example_run(tracker)
        assert tracker.flush(timeout_s=30) is False
        report = sync_spool(settings)
        assert report.busy_files == [tracker.spool_path] and report.applied == 0
    finally:
        tracker._writer._ping_timeout_s = 0.2
        tracker.close()
    assert tracker.spool_path.exists()
    assert sync_spool(settings).applied == 1


def test_sync_sets_aside_a_write_mongodb_rejects(settings, db):
    """A write MongoDB rejects for good is set aside; the writes after it are applied."""
    import datetime as dt

    from tracking.spool import SpoolFile

    exp = ObjectId()
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    spool = SpoolFile(settings.data_dir / "tracking" / "spool")
    spool.append(
        [
            {
                "op": "create",
                "db": settings.mongo_db,
                "doc": {"_id": exp, "name": "x", "status": "running"},
            },
            {"op": "update", "db": settings.mongo_db, "id": exp, "update": {"$bogus": {"a": 1}}},
            {
                "op": "epoch",
                "db": settings.mongo_db,
                "id": ObjectId(),
                "experiment_id": exp,
                "epoch": 0,
                "metrics": {"val_loss": 1.0},
                "at": at,
                "host": "h",
            },
        ]
    )
    spool.close()
    report = sync_spool(settings)
    assert (report.applied, report.rejected) == (2, 1)
    assert db.epochs.count_documents({"experiment_id": exp}) == 1
    rejected = list((settings.data_dir / "tracking" / "spool").glob("rejected-*.jsonl"))
    assert len(rejected) == 1 and "$bogus" in rejected[0].read_text()
