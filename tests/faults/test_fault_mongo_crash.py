"""MongoDB crashes (SIGKILL) lose no acknowledged tracking write, and never split a run's best.

Promises (README "Reliability", docs/tracking.md "Durability"):

1. When ``Tracker.flush()`` has returned True, everything recorded before it (the run, its
   epochs, step metrics, checkpoints with their GridFS copies, summary, log and final status)
   survives a SIGKILL of the MongoDB server: after a restart on the same data all of it is
   there. Each write is journaled before it is acknowledged (``w="majority", j=True``).
2. A run's ``summary.best_epoch`` and its best checkpoint never disagree, whatever moment a
   crash picks: here the training process and the server are both SIGKILLed (a machine crash:
   no replay is possible) at several points of a run whose best changes every few epochs, and
   what is stored is checked after a restart.

Each test prints the figures the issue asked for (writes acknowledged vs found after the
crash); ``pytest -s`` shows them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gridfs
from faults_testlib import sigkill, start_example_run

from services.connections import mongo_client
from services.settings import Settings
from tracking import Tracker

REPO = Path(__file__).resolve().parents[2]
#: Epochs of the run recorded before each of the five crashes.
EPOCH_COUNTS = (1, 2, 4, 7, 12)
STEPS_PER_EPOCH = 40


def _val_loss(epoch: int) -> float:
    """Improves, except every third epoch: the best is not always the last epoch."""
    return 5.0 if epoch % 3 == 2 else 1.0 / (epoch + 1)


def _weights(name: str, epoch: int) -> bytes:
    return f"{name} weights of epoch {epoch}\n".encode() * 2000


def _record(tracker: Tracker, tmp_path: Path, name: str, n_epochs: int) -> dict:
    """Record a complete run; return what must be stored."""
    run = start_example_run(tracker, name=name)
    best, best_epoch = float("inf"), None
    for epoch in range(n_epochs):
        for i in range(STEPS_PER_EPOCH):
            step = epoch * STEPS_PER_EPOCH + i
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        val = _val_loss(epoch)
        run.log_epoch(epoch, {"train_loss": val / 2, "val_loss": val})
        path = tmp_path / name / f"epoch_{epoch:04d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_weights(name, epoch))
        is_best = val < best
        if is_best:
            best, best_epoch = val, epoch
        run.log_checkpoint(
            path, epoch=epoch, metrics={"val_loss": val}, is_best=is_best, upload=True
        )
    run.set_summary({"best_epoch": best_epoch, "val_loss": best})
    run.attach_log(f"log of {name}\n")
    run.finish()
    return {"id": run.id, "epochs": n_epochs, "best_epoch": best_epoch, "best": best, "name": name}


def _found(database, expected: dict) -> dict:
    """What is stored of ``expected``'s run, checked item by item; counts of what was found."""
    run_id, n, name = expected["id"], expected["epochs"], expected["name"]
    exp = database.experiments.find_one({"_id": run_id})
    assert exp is not None, f"run {name} is gone"
    assert exp["status"] == "completed" and exp["last_epoch"] == n - 1
    assert exp["summary"] == {"best_epoch": expected["best_epoch"], "val_loss": expected["best"]}
    assert exp["best_checkpoint"]["epoch"] == expected["best_epoch"]
    assert exp["log"]["text"] == f"log of {name}\n"
    epochs = {e["epoch"]: e["metrics"] for e in database.epochs.find({"experiment_id": run_id})}
    assert epochs == {
        e: {"train_loss": _val_loss(e) / 2, "val_loss": _val_loss(e)} for e in range(n)
    }
    steps = sorted(
        p["step"] for b in database.metrics.find({"experiment_id": run_id}) for p in b["points"]
    )
    assert steps == list(range(n * STEPS_PER_EPOCH))
    ckpts = list(database.checkpoints.find({"experiment_id": run_id}).sort("epoch", 1))
    assert [c["epoch"] for c in ckpts] == list(range(n))
    assert [c["epoch"] for c in ckpts if c["is_best"]] == [expected["best_epoch"]]
    bucket = gridfs.GridFSBucket(database)
    for c in ckpts:
        blob = bucket.open_download_stream(c["gridfs_id"]).read()
        assert c["upload_status"] == "uploaded"
        assert blob == _weights(name, c["epoch"])
        assert hashlib.sha256(blob).hexdigest() == c["sha256"]
    return {
        "epochs": len(epochs),
        "steps": len(steps),
        "checkpoints": len(ckpts),
        "files": len(ckpts),
    }


def test_acknowledged_writes_survive_a_server_sigkill(start_local_mongo, crash_mongo, tmp_path):
    """Record, flush (True), SIGKILL MongoDB at once, restart it: everything is there; 5 times."""
    server = start_local_mongo()
    recorded: list[tuple[str, dict]] = []
    for repetition, n_epochs in enumerate(EPOCH_COUNTS):
        db_name = f"crash_{repetition}"
        settings = Settings(mongo_uri=server.uri, mongo_db=db_name, data_dir=tmp_path / "data")
        tracker = Tracker(settings)
        try:
            expected = _record(tracker, tmp_path, f"run{repetition}", n_epochs)
            assert tracker.flush() is True
            acknowledged = tracker.acknowledged
            server = crash_mongo(server)  # no pause between the acknowledgement and the kill
            recorded.append((db_name, expected))
            client = mongo_client(server.uri)
            try:
                # This run, and every run recorded before the earlier crashes, is complete.
                found = [_found(client[name], exp) for name, exp in recorded]
            finally:
                client.close()
        finally:
            tracker.close()
        print(
            f"repetition {repetition + 1}: {n_epochs} epochs, {acknowledged} write ops acknowledged; "
            f"found after SIGKILL + restart: 1 run (completed), {found[-1]['epochs']} epochs, "
            f"{found[-1]['steps']} step points, {found[-1]['checkpoints']} checkpoints, "
            f"{found[-1]['files']} GridFS files; lost 0"
        )


_TRAINER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.settings import Settings
    from tracking import Tracker

    settings = Settings(mongo_uri=sys.argv[1], mongo_db=sys.argv[2], data_dir=Path(sys.argv[3]))
    tracker = Tracker(settings)
    run = tracker.start_run("crash", 2, model={"name": "m"}, config={}, data={}, features={},
                            code={"commit": None, "dirty": None})
    ckpt = Path(sys.argv[3]) / "checkpoint.pt"
    best, best_epoch = float("inf"), None
    for epoch in range(100_000):
        val = 5.0 if epoch % 3 == 2 else 1.0 / (epoch + 1)
        run.log_epoch(epoch, {"val_loss": val})
        ckpt.write_bytes(b"weights %d" % epoch)
        is_best = val < best
        if is_best:
            best, best_epoch = val, epoch
        run.log_checkpoint(ckpt, epoch=epoch, metrics={"val_loss": val}, is_best=is_best)
        run.set_summary({"best_epoch": best_epoch, "best_val_loss": best})
        tracker.flush()  # one epoch's writes at a time, so the kill lands among them
        print(epoch, flush=True)
    """
)
#: Epoch after which each kill happens (plus a few milliseconds, different each time).
KILL_AFTER_EPOCH = (0, 1, 2, 4, 7, 11)


def _best_through(epoch: int) -> int | None:
    """The best epoch among epochs 0..``epoch`` of _TRAINER's run."""
    vals = {e: 5.0 if e % 3 == 2 else 1.0 / (e + 1) for e in range(epoch + 1)}
    return min(vals, key=lambda e: (vals[e], e)) if vals else None


def _check_crash_state(database) -> dict:
    """The invariants a crash must keep; a description of what it left."""
    exp = database.experiments.find_one({})
    epochs = sorted(e["epoch"] for e in database.epochs.find({}))
    ckpts = {c["_id"]: c for c in database.checkpoints.find({})}
    ckpt_epochs = sorted(c["epoch"] for c in ckpts.values())
    # Writes are durable in the order they were made: what is stored is a prefix of the run.
    assert epochs == list(range(len(epochs)))
    assert ckpt_epochs == list(range(len(ckpt_epochs))) and len(ckpt_epochs) <= len(epochs)
    pointer = exp.get("best_checkpoint")
    summary_best = exp["summary"].get("best_epoch")
    flagged = [c["_id"] for c in ckpts.values() if c["is_best"]]
    if summary_best is not None:  # the summary and the best checkpoint agree
        assert pointer is not None and pointer["epoch"] == summary_best
    if pointer is not None:  # the pointer names a stored checkpoint of that epoch
        assert ckpts[pointer["id"]]["epoch"] == pointer["epoch"]
        last = ckpt_epochs[-1]
        assert pointer["epoch"] in {_best_through(last), _best_through(last - 1)}
    assert flagged in ([], [None if pointer is None else pointer["id"]])  # never a wrong flag
    return {
        "epochs": len(epochs),
        "checkpoints": len(ckpt_epochs),
        "best_epoch": None if pointer is None else pointer["epoch"],
        "flag": "on the best" if flagged else "none (a switch was cut short)",
    }


def _wait_for_epoch(process: subprocess.Popen, epoch: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the training process ended early: {process.stderr.read()}")
        if int(line) >= epoch:
            return
    raise AssertionError(f"the training process did not reach epoch {epoch} in 120 s")


def test_summary_and_best_checkpoint_agree_whenever_trainer_and_server_crash(
    start_local_mongo, crash_mongo, tmp_path
):
    """SIGKILL the training process and MongoDB together at 6 points: the stored run is consistent."""
    server = start_local_mongo()
    crashed: list[str] = []
    for point, epoch in enumerate(KILL_AFTER_EPOCH):
        db_name = f"machine_crash_{point}"
        data_dir = tmp_path / f"trainer{point}"
        data_dir.mkdir()
        trainer = subprocess.Popen(
            [sys.executable, "-c", _TRAINER, server.uri, db_name, str(data_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_epoch(trainer, epoch)
            time.sleep(0.003 * point)  # somewhere among the next epoch's writes
            sigkill(trainer.pid)
            server = crash_mongo(server)
        finally:
            sigkill(trainer.pid)
            trainer.communicate()
        crashed.append(db_name)
        client = mongo_client(server.uri)
        try:
            states = [_check_crash_state(client[name]) for name in crashed]
        finally:
            client.close()
        state = states[-1]
        print(
            f"crash point {point + 1} (after epoch {epoch} was reported): stored "
            f"{state['epochs']} epochs, {state['checkpoints']} checkpoints, best epoch "
            f"{state['best_epoch']} in summary and pointer, is_best flag {state['flag']}"
        )
