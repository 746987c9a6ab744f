"""Op records: grouped application equals one-by-one application, and replays are idempotent."""

from __future__ import annotations

import datetime as dt

from bson import ObjectId

from services.connections import mongo_client
from tracking.ops import OpApplier
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
