"""Op records: grouped application equals one-by-one application, replays are idempotent, and
the outcomes of checkpoint uploads."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import InsertOne, UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure

from services.connections import mongo_client
from tracking.ops import ApplyError, OpApplier, _is_duplicate_key, is_transient
from tracking.spool import decode, encode


def _ops(db_name: str) -> list[dict]:
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    exp = ObjectId()
    doc = {
        "_id": exp,
        "name": "ops",
        "challenge": 1,
        "status": "running",
        "heartbeat": t0,
        "last_epoch": None,
    }
    ops = [{"op": "create", "doc": doc}]
    bucket = ObjectId()
    for epoch in range(6):
        at = t0 + dt.timedelta(seconds=epoch)
        points = [
            {"step": epoch * 10 + i, "at": at, "values": {"loss": float(epoch * 10 + i)}}
            for i in range(10)
        ]
        if epoch == 3:
            bucket = ObjectId()  # a second bucket
        ops.append(
            {
                "op": "metrics",
                "experiment_id": exp,
                "bucket_id": bucket,
                "batch_id": ObjectId(),
                "points": points,
                "first_step": epoch * 10,
                "last_step": epoch * 10 + 9,
                "heartbeat": at,
            }
        )
        ops.append(
            {
                "op": "epoch",
                "id": ObjectId(),
                "experiment_id": exp,
                "epoch": epoch,
                "metrics": {"val_loss": 1.0 / (epoch + 1)},
                "at": at,
                "host": "h",
            }
        )
        ops.append({"op": "update", "id": exp, "update": {"$max": {"heartbeat": at}}})
    ops.append(
        {
            "op": "epoch",
            "id": ObjectId(),
            "experiment_id": exp,
            "epoch": 2,
            "metrics": {"val_loss": 9.0},
            "at": t0 + dt.timedelta(seconds=9),
            "host": "h",
        }
    )
    ops.append(
        {
            "op": "update",
            "id": exp,
            "update": {"$set": {"status": "completed", "summary.val_loss": 0.1}},
        }
    )
    for op in ops:
        op["db"] = db_name
    # Through the spool encoding, as a replay would see them.
    return [decode(encode(op)) for op in ops]


def _state(database) -> dict:
    out = {}
    for name in ("experiments", "epochs", "metrics"):
        docs = list(
            database[name].find({}, {"_id": 0} if name == "epochs" else None).sort("_id", 1)
        )
        if name == "metrics":
            docs = [
                {
                    **d,
                    "points": sorted(d["points"], key=lambda p: p["step"]),
                    "batch_ids": sorted(d["batch_ids"]),
                }
                for d in docs
            ]
        if name == "epochs":
            docs = sorted(docs, key=lambda d: d["epoch"])
        out[name] = docs
    return out


def test_grouped_equals_one_by_one_and_replays_change_nothing(settings, db):
    client = mongo_client(settings.mongo_uri)
    names = [f"{settings.mongo_db}_{k}" for k in ("single", "grouped", "replayed")]
    try:
        applier = OpApplier(client)
        single, grouped, replayed = (client[n] for n in names)
        ops = _ops(names[0])
        for op in ops:
            applier.apply(op)
        for op in ops:
            op["db"] = names[1]
        applier.apply_many(ops)
        for op in ops:
            op["db"] = names[2]
        applier.apply_many(ops[:11])  # an outage after 11 writes ...
        applier.apply_many(ops)  # ... then the whole spool is replayed
        applier.apply_many(ops)  # and once more
        expected = _state(single)
        assert expected["epochs"][2]["metrics"] == {"val_loss": 9.0}
        assert sum(b["n"] for b in expected["metrics"]) == 60 and len(expected["metrics"]) == 2
        assert expected["experiments"][0]["last_epoch"] == 5
        assert expected["experiments"][0]["last_metrics"] == {"val_loss": 1.0 / 6}
        assert _state(grouped) == expected
        assert _state(replayed) == expected
    finally:
        for n in names:
            client.drop_database(n)
        client.close()


def _metrics_op(db_name, exp, bucket, first_step, at) -> dict:
    points = [{"step": first_step + i, "at": at, "values": {"loss": 1.0}} for i in range(5)]
    return {
        "op": "metrics",
        "db": db_name,
        "experiment_id": exp,
        "bucket_id": bucket,
        "batch_id": ObjectId(),
        "points": points,
        "first_step": first_step,
        "last_step": first_step + 4,
        "heartbeat": at,
    }


def test_groups_of_one_kind_replayed_after_a_partial_write(settings, db):
    """Consecutive creates, epochs and metric batches go in groups; a replay of a group that was
    half applied (some batches already in their bucket) stores each point once."""
    client = mongo_client(settings.mongo_uri)
    try:
        applier = OpApplier(client)
        t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        exps = [ObjectId(), ObjectId()]
        creates = [
            {"op": "create", "db": db.name, "doc": {"_id": e, "name": "g", "heartbeat": t0}}
            for e in exps
        ]
        epochs = [
            {
                "op": "epoch",
                "db": db.name,
                "id": ObjectId(),
                "experiment_id": exps[0],
                "epoch": n,
                "metrics": {"val_loss": float(n)},
                "at": t0 + dt.timedelta(seconds=n),
                "host": "h",
            }
            for n in range(3)
        ]
        bucket = ObjectId()
        metrics = [
            _metrics_op(db.name, exps[0], bucket, 5 * i, t0 + dt.timedelta(seconds=10 + i))
            for i in range(4)
        ]
        applier.apply_many(creates + epochs + metrics[:2])  # written before an outage
        applier.apply_many(creates + epochs + metrics)  # the whole spool replayed
        stored = db.metrics.find_one({"_id": bucket})
        assert sorted(p["step"] for p in stored["points"]) == list(range(20))
        assert stored["n"] == 20 and len(stored["batch_ids"]) == 4
        exp = db.experiments.find_one({"_id": exps[0]})
        assert exp["last_epoch"] == 2 and exp["heartbeat"] == t0 + dt.timedelta(seconds=13)
        assert db.experiments.count_documents({}) == 2 and db.epochs.count_documents({}) == 3
    finally:
        client.close()


def test_unknown_op_kind_is_refused(settings):
    client = mongo_client(settings.mongo_uri)
    try:
        with pytest.raises(ValueError, match="unknown tracking op 'delete'"):
            OpApplier(client).apply({"op": "delete", "db": settings.mongo_db})
        with pytest.raises(ApplyError, match="op 0: ValueError") as info:
            OpApplier(client).apply_many([{"op": "delete", "db": settings.mongo_db}])
        assert info.value.index == 0 and not is_transient(info.value.cause)
    finally:
        client.close()


def test_duplicate_keys_and_transient_errors_are_told_apart(db):
    db.things.insert_one({"_id": 1, "n": "text"})
    with pytest.raises(BulkWriteError) as duplicate:
        db.things.bulk_write([InsertOne({"_id": 1})])
    assert _is_duplicate_key(duplicate.value)
    with pytest.raises(BulkWriteError) as wrong_type:
        db.things.bulk_write([UpdateOne({"_id": 1}, {"$inc": {"n": 1}})])
    assert not _is_duplicate_key(wrong_type.value) and not is_transient(wrong_type.value)
    assert not _is_duplicate_key(ValueError("x"))
    labelled = OperationFailure("conflict", code=112)
    labelled._add_error_label("TransientTransactionError")
    assert is_transient(labelled) and is_transient(AutoReconnect("gone"))
    assert is_transient(OperationFailure("shutting down", code=91))


def _checkpoint_op(db_name, tmp_path, content: bytes, recorded: bytes) -> dict:
    blob = tmp_path / f"{ObjectId()}.bin"
    blob.write_bytes(content)
    doc = {
        "_id": ObjectId(),
        "experiment_id": ObjectId(),
        "epoch": 0,
        "path": str(tmp_path / "best.pt"),
        "sha256": hashlib.sha256(recorded).hexdigest(),
        "metrics": {"val_loss": 0.5},
        "is_best": False,
        "gridfs_id": ObjectId(),
        "upload_status": "pending",
    }
    return {"op": "checkpoint", "db": db_name, "doc": doc, "blob": str(blob)}


def test_checkpoint_upload_outcomes(settings, db, tmp_path):
    client = mongo_client(settings.mongo_uri)
    try:
        applier = OpApplier(client)
        good = _checkpoint_op(db.name, tmp_path, b"weights", b"weights")
        applier.apply(good)
        applier.apply(good)  # a replay: the file is in GridFS already
        status = db.checkpoints.find_one({"_id": good["doc"]["_id"]})["upload_status"]
        assert status == "uploaded" and not Path(good["blob"]).exists()
        assert db["fs.files"].count_documents({"_id": good["doc"]["gridfs_id"]}) == 1

        changed = _checkpoint_op(db.name, tmp_path, b"overwritten", b"weights")
        applier.apply(changed)
        status = db.checkpoints.find_one({"_id": changed["doc"]["_id"]})["upload_status"]
        assert status.startswith("failed: snapshot sha256")
        assert db["fs.files"].count_documents({"_id": changed["doc"]["gridfs_id"]}) == 0

        gone = _checkpoint_op(db.name, tmp_path, b"weights", b"weights")
        Path(gone["blob"]).unlink()
        applier.apply(gone)
        status = db.checkpoints.find_one({"_id": gone["doc"]["_id"]})["upload_status"]
        assert status == "missing: the snapshot taken for upload is gone"
    finally:
        client.close()
