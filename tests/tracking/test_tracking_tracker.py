"""The Tracker API used by training, against the real MongoDB-wire server."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import gridfs
import pytest
from bson import ObjectId
from tracking_testlib import start_example_run

from tracking import (
    ChecksumMismatchError,
    InvalidIdError,
    NotFoundError,
    Tracker,
    TrackingError,
)
from tracking import run as run_module
from tracking.schema import BUCKET_MAX_POINTS, INDEXES


def test_start_run_stores_the_experiment_document(tracker, db):
    run = start_example_run(tracker, tags=["baseline", "r1"], notes="first try")
    assert isinstance(run.id, ObjectId)
    assert tracker.flush() is True
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["name"] == "eegnex-test" and doc["challenge"] == 2
    assert doc["status"] == "running"
    assert doc["model"] == {"name": "EEGNeX", "architecture": "EEGNeX", "parameters": 62_000}
    assert doc["data"]["splits"]["train"] == {"windows": 600, "subjects": 10}
    assert doc["features"] == {"feature_service": "eeg_inputs_v1", "snapshot_id": "abc123"}
    assert doc["code"] == {"commit": "0" * 40, "dirty": False}
    assert doc["tags"] == ["baseline", "r1"] and doc["notes"] == "first try"
    assert doc["host"] and doc["created_by"] and doc["started_at"] and doc["heartbeat"]
    assert doc["ended_at"] is None


def test_indexes_are_created_idempotently(settings, db):
    for _ in range(2):
        with Tracker(settings) as t:
            assert t.flush() is True
    for collection, models in INDEXES.items():
        names = set(db[collection].index_information())
        assert {m.document["name"] for m in models} <= names, collection
    assert db.epochs.index_information()["experiment_epoch"]["unique"] is True


def test_config_secrets_are_redacted(tracker, db):
    config = {
        "learning_rate": 0.01,
        "db": {"uri": "mongodb://alice:s3cret@db.example:27017/eeg", "password": "hunter2"},
        "hf_token": "hf_abc",
        "OPENAI_API_KEY": "sk-xyz",
        "max_tokens": 128,
        "notes": "connect with password=hunter2",
    }
    run = start_example_run(tracker, config=config, notes="uri redis://:pw@cache:6379/0")
    tracker.flush()
    doc = db.experiments.find_one({"_id": run.id})
    text = repr(doc)
    for secret in ("s3cret", "hunter2", "hf_abc", "sk-xyz", ":pw@"):
        assert secret not in text
    assert doc["config"]["db"]["uri"] == "mongodb://alice:***@db.example:27017/eeg"
    assert doc["config"]["max_tokens"] == 128 and doc["config"]["learning_rate"] == 0.01


def test_code_none_detects_the_git_commit_and_dirty_flag(tracker, db, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "-C", str(repo), "add", "train.py"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "init"], check=True)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.chdir(repo)
    clean = start_example_run(tracker, code=None)
    (repo / "train.py").write_text("print(2)\n")
    dirty = start_example_run(tracker, code=None)
    tracker.flush()
    assert db.experiments.find_one({"_id": clean.id})["code"]["commit"] == head
    assert db.experiments.find_one({"_id": clean.id})["code"]["dirty"] is False
    assert db.experiments.find_one({"_id": dirty.id})["code"]["dirty"] is True


def test_bad_arguments_raise_clear_errors(tracker):
    with pytest.raises(ValueError, match="challenge must be 1 or 2"):
        start_example_run(tracker, challenge=3)
    with pytest.raises(ValueError, match="'a.b'"):
        start_example_run(tracker, config={"a.b": 1})
    with pytest.raises(TypeError, match="config.arr"):
        start_example_run(tracker, config={"arr": object()})
    run = start_example_run(tracker)
    with pytest.raises(TypeError, match="val_loss"):
        run.log_epoch(0, {"val_loss": "low"})
    with pytest.raises(ValueError, match="epoch must be"):
        run.log_epoch(-1, {"val_loss": 1.0})
    with pytest.raises(ValueError, match="metric name"):
        run.log_metrics({"val.loss": 1.0}, step=0)


def test_log_epoch_is_idempotent_and_keeps_latest_values(tracker, db):
    run = start_example_run(tracker)
    run.log_epoch(0, {"train_loss": 1.0, "val_loss": 1.2})
    run.log_epoch(3, {"train_loss": 0.5, "val_loss": 0.9})
    run.log_epoch(3, {"train_loss": 0.4, "val_loss": 0.7})
    tracker.flush()
    epochs = list(db.epochs.find({"experiment_id": run.id}).sort("epoch"))
    assert [e["epoch"] for e in epochs] == [0, 3]
    assert epochs[1]["metrics"] == {"train_loss": 0.4, "val_loss": 0.7}
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["last_epoch"] == 3 and doc["last_metrics"] == {"train_loss": 0.4, "val_loss": 0.7}
    assert run.last_epoch() == 3


def test_nan_metrics_are_stored(tracker, db):
    run = start_example_run(tracker)
    run.log_epoch(0, {"val_loss": float("nan")})
    tracker.flush()
    value = db.epochs.find_one({"experiment_id": run.id})["metrics"]["val_loss"]
    assert value != value  # NaN


def test_step_metrics_go_to_bounded_buckets(tracker, db):
    run = start_example_run(tracker)
    n = 2 * BUCKET_MAX_POINTS + 345
    for step in range(n):
        run.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.002}, step=step)
    tracker.flush()
    buckets = list(db.metrics.find({"experiment_id": run.id}))
    assert len(buckets) == 3
    assert all(b["n"] == len(b["points"]) <= BUCKET_MAX_POINTS for b in buckets)
    steps = sorted(p["step"] for b in buckets for p in b["points"])
    assert steps == list(range(n))
    first = min(buckets, key=lambda b: b["first_step"])
    assert first["points"][0]["values"] == {"loss": 1.0, "lr": 0.002}


def test_context_manager_marks_completed_failed_and_stopped(tracker, db):
    with start_example_run(tracker) as ok:
        ok.log_epoch(0, {"val_loss": 1.0})
    with pytest.raises(RuntimeError, match="boom"), start_example_run(tracker) as bad:
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), start_example_run(tracker) as stopped:
        raise KeyboardInterrupt
    tracker.flush()
    assert db.experiments.find_one({"_id": ok.id})["status"] == "completed"
    failed = db.experiments.find_one({"_id": bad.id})
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert (
        "Traceback" in failed["traceback"] and 'raise RuntimeError("boom")' in failed["traceback"]
    )
    assert failed["ended_at"] is not None
    assert db.experiments.find_one({"_id": stopped.id})["status"] == "stopped"


def test_logging_after_finish_is_an_error(tracker):
    run = start_example_run(tracker)
    run.finish()
    with pytest.raises(TrackingError, match="already finished"):
        run.log_epoch(1, {"val_loss": 1.0})
    with pytest.raises(ValueError, match="finish status"):
        run.finish("done")


def _checkpoint(tmp_path: Path, name: str, payload: bytes) -> Path:
    path = tmp_path / "ckpt" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_exactly_one_best_checkpoint_and_local_state(tracker, db, tmp_path):
    run = start_example_run(tracker)
    first = run.log_checkpoint(
        _checkpoint(tmp_path, "e0.pt", b"a" * 100), epoch=0, metrics={"val_loss": 1.0}, is_best=True
    )
    run.log_checkpoint(
        _checkpoint(tmp_path, "e1.pt", b"b" * 100), epoch=1, metrics={"val_loss": 1.1}
    )
    third = run.log_checkpoint(
        _checkpoint(tmp_path, "e2.pt", b"c" * 100), epoch=2, metrics={"val_loss": 0.8}, is_best=True
    )
    tracker.flush()
    assert db.checkpoints.count_documents({"experiment_id": run.id}) == 3
    best = list(db.checkpoints.find({"experiment_id": run.id, "is_best": True}))
    assert [b["_id"] for b in best] == [third]
    assert db.checkpoints.find_one({"_id": first})["is_best"] is False
    assert db.experiments.find_one({"_id": run.id})["best_checkpoint"]["id"] == third
    stored = db.checkpoints.find_one({"_id": third})
    assert stored["size_bytes"] == 100
    assert stored["sha256"] == hashlib.sha256(b"c" * 100).hexdigest()
    assert run.best_checkpoint()["_id"] == third
    assert run.latest_checkpoint()["epoch"] == 2


def test_uploaded_checkpoint_is_fetched_from_gridfs_and_verified(tracker, db, tmp_path):
    payload = bytes(range(256)) * 300
    path = _checkpoint(tmp_path, "best.pt", payload)
    run = start_example_run(tracker)
    run.log_checkpoint(path, epoch=4, metrics={"val_loss": 0.5}, is_best=True, upload=True)
    # Training overwrites best.pt right away: the upload must still hold the logged bytes.
    path.write_bytes(b"next epoch")
    tracker.flush()
    ckpt = db.checkpoints.find_one({"experiment_id": run.id})
    assert ckpt["sha256"] == hashlib.sha256(payload).hexdigest()
    assert ckpt["upload_status"] == "uploaded"
    path.unlink()
    fetched = tracker.fetch_checkpoint(ckpt, tmp_path / "dl")
    assert fetched == tmp_path / "dl" / "best.pt" and fetched.read_bytes() == payload
    # A local file with the right checksum is used as is.
    path.write_bytes(payload)
    assert tracker.fetch_checkpoint(ckpt, tmp_path / "dl2") == path
    # A corrupt GridFS copy is refused and leaves nothing behind.
    path.unlink()
    chunk = db["fs.chunks"].find_one({"files_id": ckpt["gridfs_id"], "n": 0})
    flipped = bytes(b ^ 0xFF for b in chunk["data"])
    db["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": flipped}})
    with pytest.raises(ChecksumMismatchError, match=ckpt["sha256"]):
        tracker.fetch_checkpoint(ckpt, tmp_path / "dl3")
    assert not (tmp_path / "dl3" / "best.pt").exists()


def test_fetch_without_upload_or_file_is_a_clear_error(tracker, tmp_path):
    path = _checkpoint(tmp_path, "gone.pt", b"x")
    run = start_example_run(tracker)
    run.log_checkpoint(path, epoch=0, metrics={"val_loss": 1.0})
    path.unlink()
    with pytest.raises(NotFoundError, match="not uploaded|no copy was uploaded"):
        tracker.fetch_checkpoint(run.latest_checkpoint(), tmp_path / "dl")
    assert gridfs.GridFSBucket(tracker.db).find({}).to_list() == []


def test_resume_run_restores_state_and_status(settings, tmp_path, db):
    with Tracker(settings) as first:
        run = start_example_run(first)
        run.log_epoch(0, {"val_loss": 1.0})
        run.log_epoch(1, {"val_loss": 0.9})
        best = run.log_checkpoint(
            _checkpoint(tmp_path, "b.pt", b"b"), epoch=1, metrics={"val_loss": 0.9}, is_best=True
        )
        run.finish("failed", error="CUDA out of memory")
    with Tracker(settings) as second:
        resumed = second.resume_run(str(run.id))
        assert resumed.last_epoch() == 1
        assert resumed.best_checkpoint()["_id"] == best
        assert resumed.latest_checkpoint()["epoch"] == 1
        resumed.log_epoch(2, {"val_loss": 0.8})
        second.flush()
        doc = db.experiments.find_one({"_id": run.id})
        assert doc["status"] == "running" and doc["error"] is None and len(doc["resumes"]) == 1
        resumed.finish()
    assert db.experiments.find_one({"_id": run.id})["status"] == "completed"
    assert db.epochs.count_documents({"experiment_id": run.id}) == 3


def test_bad_ids_raise_clear_errors(tracker):
    with pytest.raises(InvalidIdError, match="24 hexadecimal"):
        tracker.resume_run("not-an-id")
    with pytest.raises(InvalidIdError):
        tracker.get_run(12345)
    with pytest.raises(NotFoundError, match="no experiment"):
        tracker.get_run(ObjectId())


def test_silent_running_run_is_reported_stale(settings, db):
    import datetime as dt

    with Tracker(settings, stale_after_s=60) as t:
        run = start_example_run(t)
        t.flush()
        assert t.get_run(run.id)["status"] == "running"
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        db.experiments.update_one({"_id": run.id}, {"$set": {"heartbeat": old}})
        doc = t.get_run(run.id)
        assert doc["status"] == "stale" and doc["stored_status"] == "running"
        run.heartbeat()
        t.flush()
        assert t.get_run(run.id)["status"] == "running"


def test_attach_log_is_capped_to_its_tail(tracker, db, monkeypatch):
    monkeypatch.setattr(run_module, "LOG_MAX_CHARS", 100)
    run = start_example_run(tracker)
    text = "".join(f"line {i}\n" for i in range(100)) + "final password=abc\n"
    run.attach_log(text)
    run.set_summary({"val_loss": 0.5})
    run.finish()
    tracker.flush()
    doc = db.experiments.find_one({"_id": run.id})
    assert doc["log"]["truncated"] is True and doc["log"]["total_chars"] == len(text)
    assert (
        doc["log"]["text"].endswith("final password=***\n") and "line 0\n" not in doc["log"]["text"]
    )
    assert doc["summary"] == {"val_loss": 0.5}


def test_invalid_mongo_uri_is_a_clear_error(settings):
    with pytest.raises(TrackingError, match="not a valid MongoDB address"):
        Tracker(settings.with_overrides(mongo_uri="http://localhost:27017"))


def test_a_forked_child_cannot_write_through_the_parents_tracker(tracker):
    import multiprocessing

    run = start_example_run(tracker)
    tracker.flush()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            run.log_epoch(0, {"val_loss": 1.0})
            queue.put("wrote")
        except TrackingError as exc:
            queue.put(str(exc))

    process = ctx.Process(target=child)
    process.start()
    message = queue.get(timeout=60)
    process.join(60)
    assert "cannot write from process" in message


def test_run_hooks_store_their_fields_and_start_once(tracker, db):
    from tracking.hooks import RunHooks, set_run_hooks

    started: list[str] = []
    set_run_hooks(
        RunHooks(start_fields={"job": {"id": "j1", "attempt": 2}}, on_start=started.append)
    )
    try:
        run = start_example_run(tracker)
    finally:
        set_run_hooks(None)
    assert started == [str(run.id)]
    assert tracker.flush() is True
    assert db.experiments.find_one({"_id": run.id})["job"] == {"id": "j1", "attempt": 2}
