"""Search, best N per challenge, compare, history and live watching."""

from __future__ import annotations

import datetime as dt
import math
import threading

import pytest
from click.testing import CliRunner
from tracking_testlib import start_example_run

from eegfs.cli import cli
from tracking import InvalidIdError, NotFoundError
from tracking.queries import (
    best_runs,
    compare_runs,
    metric_expr,
    parse_metric_filter,
    run_history,
    run_metric,
    search_runs,
)
from tracking.watch import watch_epochs


def _populate(tracker):
    """Five finished runs over two challenges and one silent running run."""
    specs = [
        (
            "c2-adam",
            2,
            {"batch_size": 64, "optimizer": "Adam", "lr": 1e-3},
            ["sweep"],
            0.40,
            "completed",
        ),
        (
            "c2-adamax",
            2,
            {"batch_size": 64, "optimizer": "Adamax", "lr": 2e-3},
            ["sweep", "best"],
            0.30,
            "completed",
        ),
        ("c2-small", 2, {"batch_size": 16, "optimizer": "Adamax", "lr": 2e-3}, [], 0.50, "failed"),
        (
            "c1-base",
            1,
            {"batch_size": 32, "optimizer": "Adam", "lr": 1e-3},
            ["sweep"],
            0.90,
            "completed",
        ),
        (
            "c1-nan",
            1,
            {"batch_size": 32, "optimizer": "Adam", "lr": 1e-1},
            [],
            float("nan"),
            "completed",
        ),
    ]
    runs = {}
    for name, challenge, config, tags, val, status in specs:
        run = start_example_run(tracker, name=name, challenge=challenge, config=config, tags=tags)
        for epoch in range(3):
            run.log_epoch(
                epoch, {"train_loss": 1.0 - epoch / 10, "val_loss": val + (2 - epoch) / 10}
            )
        run.set_summary({"val_loss": val})
        run.finish(status)
        runs[name] = run
    runs["silent"] = start_example_run(
        tracker, name="silent", challenge=2, config={"optimizer": "SGD"}
    )
    tracker.flush()
    return runs


def test_search_filters(tracker, db):
    runs = _populate(tracker)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    db.experiments.update_one({"_id": runs["silent"].id}, {"$set": {"heartbeat": old}})

    def names(**kw):
        return sorted(r["name"] for r in search_runs(db, **kw))

    assert names(challenge=1) == ["c1-base", "c1-nan"]
    assert names(status="failed") == ["c2-small"]
    assert names(status="stale") == ["silent"]
    assert names(status="running") == []
    assert names(tags=["sweep"]) == ["c1-base", "c2-adam", "c2-adamax"]
    assert names(tags=["sweep", "best"]) == ["c2-adamax"]
    assert names(config={"optimizer": "Adamax"}) == ["c2-adamax", "c2-small"]
    assert names(config={"batch_size": 64, "optimizer": "Adam"}) == ["c2-adam"]
    assert names(config={"lr": (1e-3, 2e-3)}, challenge=2) == ["c2-adam", "c2-adamax", "c2-small"]
    assert names(metrics={"val_loss": (None, 0.45)}) == ["c2-adam", "c2-adamax"]
    assert names(metrics={"val_loss": {"$gt": 0.45}}) == ["c1-base", "c2-small"]
    assert names(name="ADAM") == ["c2-adam", "c2-adamax"]
    assert [r["name"] for r in search_runs(db, limit=2)] == ["silent", "c1-nan"]
    with pytest.raises(ValueError, match="unknown run status"):
        search_runs(db, status="done")


#: Experiment documents covering every case of the metric rule, with the value it must give.
METRIC_CASES = [
    ("summary", {"summary": {"val_loss": 0.2}, "last_metrics": {"val_loss": 0.9}}, 0.2),
    ("summary-null", {"summary": {"val_loss": None}, "last_metrics": {"val_loss": 0.7}}, 0.7),
    ("summary-missing", {"summary": {}, "last_metrics": {"val_loss": 0.6}}, 0.6),
    ("no-summary-field", {"last_metrics": {"val_loss": 0.5}}, 0.5),
    ("both-null", {"summary": {"val_loss": None}, "last_metrics": {"val_loss": None}}, None),
    ("nothing", {"summary": None, "last_metrics": None}, None),
    ("summary-nan", {"summary": {"val_loss": math.nan}, "last_metrics": {"val_loss": 0.1}}, "nan"),
]


def _same(value, expected) -> bool:
    if expected == "nan":
        return isinstance(value, float) and math.isnan(value)
    return value == expected


def test_metric_rule_is_the_same_in_python_and_in_mongodb(db):
    docs = [{"_id": name, "challenge": 2, **fields} for name, fields, _ in METRIC_CASES]
    db.experiments.insert_many(docs)
    from_mongo = {
        d["_id"]: d.get("value")
        for d in db.experiments.aggregate([{"$project": {"value": metric_expr("val_loss")}}])
    }
    for name, fields, expected in METRIC_CASES:
        assert _same(run_metric(fields, "val_loss"), expected), name
        assert _same(from_mongo[name], expected), (name, from_mongo[name])
    # Range filters and ranking use the same value, and leave NaN and missing values out.
    found = search_runs(db, metrics={"val_loss": (None, 0.75)}, stale_after_s=60)
    assert sorted(d["_id"] for d in found) == [
        "no-summary-field",
        "summary",
        "summary-missing",
        "summary-null",
    ]
    ranked = best_runs(db, metric="val_loss", n=10)[2]
    assert [d["_id"] for d in ranked] == [
        "summary",
        "no-summary-field",
        "summary-missing",
        "summary-null",
    ]


def test_cli_list_shows_the_metric_by_the_same_rule(tracker, cli_env):
    run = start_example_run(tracker, name="null-summary")
    run.log_epoch(0, {"val_loss": 0.4321})
    run.finish()
    tracker.flush()
    # A summary value of null (as a migrated or hand-edited document may hold) falls back.
    tracker.db.experiments.update_one({"_id": run.id}, {"$set": {"summary.val_loss": None}})
    result = CliRunner().invoke(cli, ["runs", "list"], env=cli_env)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if str(run.id) in line)
    assert "0.4321" in row


def test_metric_filter_parsing():
    assert parse_metric_filter("val_loss<0.5") == ("val_loss", {"$lt": 0.5})
    assert parse_metric_filter("val/nrmse >= 0.1") == ("val/nrmse", {"$gte": 0.1})
    assert parse_metric_filter("0.1<=val_loss<0.5") == ("val_loss", {"$gte": 0.1, "$lt": 0.5})
    with pytest.raises(ValueError, match="not understood"):
        parse_metric_filter("val_loss")
    with pytest.raises(ValueError, match="numbers"):
        parse_metric_filter("val_loss<low")


def test_best_n_per_challenge(tracker, db):
    _populate(tracker)
    best = best_runs(db, metric="val_loss", n=2)
    assert sorted(best) == [1, 2]
    assert [r["name"] for r in best[2]] == ["c2-adamax", "c2-adam"]
    assert [r["metric_value"] for r in best[2]] == [0.30, 0.40]
    assert [r["name"] for r in best[1]] == ["c1-base"]  # the NaN run is left out
    worst = best_runs(db, metric="val_loss", n=1, mode="max", challenge=2)
    assert list(worst) == [2] and worst[2][0]["name"] == "c2-small"
    only_done = best_runs(db, metric="val_loss", n=5, status="completed")
    assert "c2-small" not in [r["name"] for r in only_done[2]]


def test_compare_shows_differences_and_curves(tracker, db):
    runs = _populate(tracker)
    a, b = runs["c2-adam"].id, runs["c2-small"].id
    result = compare_runs(db, [str(a), b])
    assert result["differences"]["config.batch_size"] == [64, 16]
    assert result["differences"]["config.optimizer"] == ["Adam", "Adamax"]
    assert "config.batch_size" not in result["same"] and result["same"]["model.name"] == "EEGNeX"
    assert result["summary"]["val_loss"] == [0.40, 0.50]
    curve = result["curves"]["val_loss"]
    assert curve["epochs"] == [0, 1, 2]
    assert curve["values"][0] == pytest.approx([0.6, 0.5, 0.4])
    assert curve["values"][1] == pytest.approx([0.7, 0.6, 0.5])
    with pytest.raises(NotFoundError):
        compare_runs(db, [a, "0" * 24])
    with pytest.raises(InvalidIdError):
        compare_runs(db, [a, "zz"])


def test_history_has_everything(tracker, db, tmp_path):
    run = start_example_run(tracker)
    for step in range(30):
        run.log_metrics({"loss": float(step)}, step=step)
    run.log_epoch(0, {"val_loss": 1.0})
    path = tmp_path / "c.pt"
    path.write_bytes(b"w")
    run.log_checkpoint(path, epoch=0, metrics={"val_loss": 1.0}, is_best=True)
    run.finish()
    tracker.flush()
    history = run_history(db, run.id)
    assert history["experiment"]["status"] == "completed"
    assert [e["epoch"] for e in history["epochs"]] == [0]
    assert [p["step"] for p in history["steps"]] == list(range(30))
    assert history["checkpoints"][0]["is_best"] is True


@pytest.mark.parametrize("change_stream", [None, False], ids=["change-stream", "polling"])
def test_watch_follows_new_epochs(tracker, db, change_stream):
    run = start_example_run(tracker)
    run.log_epoch(0, {"val_loss": 1.0})
    tracker.flush()

    def train():
        for epoch in range(1, 4):
            run.log_epoch(epoch, {"val_loss": 1.0 / (epoch + 1)})
            tracker.flush()
        run.finish()
        tracker.flush()

    seen = []
    gen = watch_epochs(
        db, run.id, use_change_stream=change_stream, poll_interval_s=0.1, timeout_s=60
    )
    first = next(gen)  # the stream is open before training goes on
    seen.append(first["epoch"])
    thread = threading.Thread(target=train)
    thread.start()
    seen.extend(doc["epoch"] for doc in gen)
    thread.join()
    assert seen == [0, 1, 2, 3]  # ends on its own once the run has finished


def test_watch_unknown_run_is_an_error(db):
    with pytest.raises(NotFoundError):
        next(watch_epochs(db, "0" * 24))
