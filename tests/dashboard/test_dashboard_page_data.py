"""The Run, Compare, Models, Features and Services pages' data against the real test servers:
the demo run (a real training), synthetic histories, an empty database, Redis away."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from dashboard_testlib import insert_history

from dashboard import compare, features, health, models, run_detail, topomap
from dashboard.errors import DashboardError, RunNotFoundError
from services.connections import mongo_client, redis_client
from services.local import free_port


@pytest.fixture
def demo_db(demo_env):
    client = mongo_client(demo_env.mongo_uri)
    try:
        yield client[demo_env.mongo_db]
    finally:
        client.close()


@pytest.fixture
def demo_redis(demo_env):
    client = redis_client(demo_env.redis_url)
    try:
        yield client
    finally:
        client.close()


# --- Run page -----------------------------------------------------------------------------------
def test_run_page_data_of_the_demo_run(demo_env, demo_db, demo_redis):
    data = run_detail.run_page_data(demo_db, demo_redis, demo_env.run_id)
    doc = data["overview"]
    assert doc["name"] == "dash-demo" and doc["status"] == "completed"
    assert "log" not in doc and doc["summary"]["val_subject_nrmse"] > 0
    line = doc["lineage"]
    assert (
        line["snapshot_id"].startswith("fs_") and line["feature_service"] == "challenge2_inputs_v1"
    )
    assert len(line["files"]) == 2
    assert all(len(f["sha256"]) == 64 for f in line["files"]), line["files"]  # catalogued
    epochs = data["epochs"]
    assert epochs["epoch"].tolist() == [0, 1, 2]
    for column in (
        "train_loss",
        "val_loss",
        "val_nrmse",
        "val_subject_nrmse",
        "lr",
        "val_subject_mean_predictor_nrmse",
    ):
        assert epochs[column].notna().all(), column
    steps = data["steps"]
    assert len(steps) > 3 and steps["step"].is_monotonic_increasing and "loss" in steps
    ckpts = data["checkpoints"]
    assert ckpts["epoch"].tolist() == [0, 1, 2] and ckpts["best"].sum() == 1
    assert (ckpts["size_bytes"] > 0).all() and ckpts["sha256"].str.len().eq(64).all()
    assert "epoch" in data["log"]["text"] and data["log"]["total_chars"] >= len(data["log"]["text"])
    live = data["live"]
    assert live["available"] and live["found"] and live["status"] == "completed"
    assert live["last"]["type"] == "end" and live["last_epoch"]["epoch"] == 2


def test_new_epochs_and_steps_only(demo_env, demo_db):
    later = run_detail.epochs_frame(demo_db, demo_env.run_id, after_epoch=1)
    assert later["epoch"].tolist() == [2]
    assert run_detail.epochs_frame(demo_db, demo_env.run_id, after_epoch=2).empty
    steps = run_detail.steps_frame(demo_db, demo_env.run_id)
    middle = int(steps["step"].iloc[len(steps) // 2])
    tail = run_detail.steps_frame(demo_db, demo_env.run_id, after_step=middle)
    assert tail["step"].tolist() == [s for s in steps["step"].tolist() if s > middle]


def test_steps_are_thinned_on_the_server(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        db = client[mongo_db_name]
        run_id = ObjectId()
        insert_history(db, run_id, epochs=0, steps=5000)
        thin = run_detail.steps_frame(db, run_id, max_points=1000)
        assert 900 <= len(thin) <= 1000
        assert thin["step"].iloc[0] == 0 and thin["step"].is_monotonic_increasing
        np.testing.assert_allclose(thin["loss"], 1.0 / (thin["step"] + 1))
        full = run_detail.steps_frame(db, run_id, max_points=10_000)
        assert full["step"].tolist() == list(range(5000))
        after = run_detail.steps_frame(db, run_id, after_step=4989)
        assert after["step"].tolist() == list(range(4990, 5000))
    finally:
        client.close()


def test_live_state_says_when_redis_is_away(demo_env):
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    state = run_detail.live_state(dead, demo_env.run_id)
    assert state["available"] is False and "ConnectionError" in state["error"]
    assert run_detail.live_state(None, demo_env.run_id)["available"] is False


def test_live_step_point_reads_the_last_step_message():
    state = {
        "last": {
            "type": "step",
            "step": 12,
            "epoch": 1,
            "loss": 0.5,
            "lr": 0.002,
            "time": "2026-01-01T00:00:00+00:00",
            "experiment_id": "x",
        }
    }
    assert run_detail.live_step_point(state) == {"step": 12, "loss": 0.5, "lr": 0.002}
    assert run_detail.live_step_point({"last": {"type": "epoch", "step": 3}}) is None
    assert run_detail.live_step_point({}) is None


def test_unknown_and_malformed_run_ids(demo_db):
    with pytest.raises(RunNotFoundError, match="no run 0{24}"):
        run_detail.run_overview(demo_db, "0" * 24)
    with pytest.raises(DashboardError, match="not a valid id: expected 24 hexadecimal"):
        run_detail.run_overview(demo_db, "nope")


def test_run_progress_reports_stale(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        db = client[mongo_db_name]
        now = dt.datetime.now(dt.UTC)
        run_id = db.experiments.insert_one(
            {
                "name": "x",
                "status": "running",
                "heartbeat": now - dt.timedelta(hours=1),
                "started_at": now - dt.timedelta(hours=2),
                "last_epoch": 4,
            }
        ).inserted_id
        progress = run_detail.run_progress(db, run_id)
        assert progress["status"] == "stale" and progress["last_epoch"] == 4
        assert run_detail.run_progress(db, ObjectId()) is None
    finally:
        client.close()


# --- Compare page -------------------------------------------------------------------------------
def test_compare_two_runs(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        db = client[mongo_db_name]
        ids = []
        for lr, name in ((0.001, "a"), (0.002, "b")):
            run_id = db.experiments.insert_one(
                {
                    "name": name,
                    "status": "completed",
                    "challenge": 2,
                    "config": {"lr": lr, "bs": 8},
                    "summary": {"val_subject_nrmse": lr * 100},
                }
            ).inserted_id
            insert_history(db, run_id, epochs=3, steps=0)
            ids.append(str(run_id))
        data = compare.compare_data(db, ids)
    finally:
        client.close()
    assert data["differences"].index.tolist() == ["config.lr"]
    assert data["differences"].loc["config.lr"].tolist() == ["0.001", "0.002"]
    assert data["runs"]["best_nrmse"].tolist() == pytest.approx([0.1, 0.2])
    curve = data["curves"]["val_loss"]
    assert curve["epoch"].tolist() == [0, 1, 2] and list(curve.columns[1:]) == ids
    assert data["summary"].loc["val_subject_nrmse"].tolist() == pytest.approx([0.1, 0.2])


def test_compare_needs_two_to_ten_valid_runs(mongo_db_name, mongo_server_uri):
    with pytest.raises(DashboardError, match="2 to 10 runs, got 1"):
        compare.check_selection(["0" * 24, "0" * 24])
    with pytest.raises(DashboardError, match="2 to 10 runs, got 11"):
        compare.check_selection([str(ObjectId()) for _ in range(11)])
    client = mongo_client(mongo_server_uri)
    try:
        with pytest.raises(DashboardError, match="no experiment with id"):
            compare.compare_data(client[mongo_db_name], [str(ObjectId()), str(ObjectId())])
    finally:
        client.close()


def test_colors_stay_with_their_run_and_differ_on_a_chart():
    first = compare.assign_colors(["a", "b"])
    assert first["a"] != first["b"]
    later = compare.assign_colors(["c", "b"], first)
    assert later["b"] == first["b"] and later["a"] == first["a"]
    assert later["c"] not in (later["b"],)
    many = compare.assign_colors([str(i) for i in range(10)])
    assert len(set(many.values())) == 10
    crowded = compare.assign_colors([str(i) for i in range(25)])
    assert set(crowded.values()) <= set(compare.PALETTE)


def test_parallel_coordinates_frame(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        db = client[mongo_db_name]
        db.experiments.insert_many(
            [
                {
                    "name": f"s{i}",
                    "tags": ["sweep"],
                    "started_at": dt.datetime(2026, 1, 1 + i),
                    "config": {
                        "lr": 0.001 * (i + 1),
                        "optimizer": "Adamax" if i % 2 else "AdamW",
                        "seed": 0,
                        "notes": None,
                    },
                    "summary": {"val_subject_nrmse": 0.5 + i / 10},
                }
                for i in range(4)
            ]
            + [
                {"name": "no-metric", "tags": ["sweep"], "config": {"lr": 1.0}},
                {
                    "name": "other",
                    "tags": ["x"],
                    "config": {"lr": 9.0},
                    "summary": {"val_nrmse": 0.1},
                },
            ]
        )
        frame = compare.parallel_frame(db, "sweep")
    finally:
        client.close()
    assert list(frame.columns) == ["id", "name", "lr", "optimizer", "best_nrmse"]
    assert sorted(frame["name"]) == ["s0", "s1", "s2", "s3"]
    assert frame["lr"].dtype.kind == "f" and set(frame["optimizer"]) == {"Adamax", "AdamW"}


# --- Models page --------------------------------------------------------------------------------
def test_models_and_versions_of_the_registry(demo_env, demo_db):
    frame = models.models_frame(demo_db)
    assert frame["name"].tolist() == ["demo-model"]
    assert frame["aliases"].iloc[0] == "candidate → v1"
    versions = models.versions_frame(demo_db, "demo-model")
    row = versions.iloc[0]
    assert row["version"] == 1 and row["aliases"] == "candidate"
    assert row["run_id"] == demo_env.run_id and row["run_name"] == "dash-demo"
    assert row["snapshot_id"].startswith("fs_") and len(row["sha256"]) == 64
    assert math.isfinite(row["val_subject_nrmse"])
    commands = models.change_commands("demo-model", 1)
    assert commands["move an alias to this version"] == "eegfs models alias demo-model production 1"


def test_predictions_of_registered_models(demo_env, demo_db, tmp_path):
    from training.predict import predict_file

    assert models.predictions_frame(demo_db).empty
    data = demo_env.c2_files[0]
    result = predict_file(
        demo_env.settings, "demo-model@candidate", data, out=tmp_path / "p.parquet"
    )
    frame = models.predictions_frame(demo_db, "demo-model")
    assert len(frame) == 1 and models.predictions_frame(demo_db, "other").empty
    row = frame.iloc[0]
    assert (row["name"], row["version"], row["id"]) == ("demo-model", 1, result.prediction_id)
    assert row["input"] == str(Path(data).resolve()) and row["out"] == str(tmp_path / "p.parquet")
    assert row["windows"] == result.n_windows > 0 and row["subjects"] == result.n_subjects
    assert row["from_snapshot"] + row["from_online"] + row["pushed"] == result.n_subjects
    assert row["subject_nrmse"] == pytest.approx(result.metrics["subject_nrmse"])
    assert row["windows_per_s"] > 0


def test_models_page_data_on_an_empty_database(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        db = client[mongo_db_name]
        assert models.models_frame(db).empty and models.versions_frame(db).empty
        assert models.predictions_frame(db).empty
    finally:
        client.close()


# --- Features page ------------------------------------------------------------------------------
def test_snapshots_and_what_redis_serves(demo_env, demo_redis):
    markers = features.online_markers(demo_redis)
    assert len(markers) == 1 and markers[0]["store_snapshot_id"].startswith("fs_")
    frame = features.snapshots_frame(demo_env.data_dir / "features", markers[0]["snapshot_ids"])
    assert len(frame) == 5 and frame["served"].all()
    c2 = frame[frame["challenge"] == 2]
    assert set(c2["release"]) == {"R1", "R2"} and (c2["windows"] == 36).all()
    assert features.snapshots_frame(demo_env.data_dir / "nowhere").empty


def test_distribution_drift_topography_profile_quality(demo_env):
    fdir = demo_env.data_dir / "features"
    subjects = features.subject_table(fdir, 2)
    assert len(subjects) == 12 and set(subjects["release"]) == {"R1", "R2"}
    names = features.scalar_features(subjects)
    assert "rel_mean_alpha" in names and "subject_id" not in names
    dist = features.distribution_frame(subjects, "rel_mean_alpha")
    assert len(dist) == 12 and set(dist.columns) == {"release", "subject_id", "value"}
    drift = features.drift_table(subjects, "R1", "R2")
    assert set(drift["feature"]) == set(names) and drift["n_ref"].eq(6).all()
    assert drift["ks"].between(0, 1).all()
    channels = features.channel_names(fdir, 2)
    assert len(channels) == 129 and channels[0] == "E1" and channels[-1] == "Cz"
    subject = subjects["subject_id"].iloc[0]
    topo = features.topography(subjects, subject, "R1", channels)
    assert topo.shape == (129, 5) and list(topo.columns) == list(features.BAND_ORDER)
    assert np.isnan(topo.loc["Cz"]).all()  # the flat reference
    finite = topo.drop(index="Cz")
    np.testing.assert_allclose(finite.sum(axis=1).dropna(), 1.0, atol=1e-3)  # bands sum to 1
    figure = topomap.topomap_figure(topo)
    assert len(figure.axes) >= 5 and all(ax.images or ax.collections for ax in figure.axes[:5])
    profile = features.band_profile(subjects, subject, "R1")
    assert list(profile.index) == list(features.BAND_ORDER)
    assert profile["subject"].sum() == pytest.approx(1.0, abs=1e-3)
    quality = features.quality_frame(subjects)
    assert (quality["flagged"] == quality["n_windows"] - quality["n_good_windows"]).all()
    assert quality["flagged"].is_monotonic_decreasing


def test_drift_statistics_and_threshold():
    subjects = pd.DataFrame(
        {
            "subject_id": [f"S{i}" for i in range(8)],
            "release": ["R1"] * 4 + ["R2"] * 4,
            "same": [1.0, 2.0, 3.0, 4.0] * 2,
            "shifted": [1.0, 2.0, 3.0, 4.0, 11.0, 12.0, 13.0, 14.0],
        }
    )
    drift = features.drift_table(subjects, "R1", "R2").set_index("feature")
    assert drift.loc["same", "smd"] == 0 and drift.loc["same", "ks"] == 0
    assert not drift.loc["same", "flagged"]
    # mean difference 10, both variances 5/3: SMD = 10 / sqrt(5/3)
    assert drift.loc["shifted", "smd"] == pytest.approx(10 / math.sqrt(5 / 3))
    assert drift.loc["shifted", "ks"] == 1.0 and drift.loc["shifted", "flagged"]
    assert drift.index[0] == "shifted"  # largest drift first


def test_topography_needs_the_egi_layout():
    topo = pd.DataFrame({"alpha": [0.2, 0.3]}, index=["ch0", "ch1"])
    with pytest.raises(DashboardError, match="GSN-HydroCel-129"):
        topomap.topomap_figure(topo)


# --- Services page ------------------------------------------------------------------------------
def test_health_of_both_servers(settings, mongo_server_uri):
    redis = redis_client(settings.redis_url)
    redis.set("training:abc:state", "x")
    redis.set("eegfs:feast:p:materialization", "{}")
    redis.set(b"\x00feast-row", "y")
    client = mongo_client(mongo_server_uri)
    try:
        info = health.redis_health(redis, "redis://:hunter2@127.0.0.1:1/0")
        keys = dict(zip(info["keys"]["prefix"], info["keys"]["keys"], strict=True))
        mongo = health.mongo_health(client, "mongodb://u:hunter2@h:1/", settings.mongo_db)
    finally:
        redis.close()
        client.close()
    assert info["answering"] and info["version"].startswith("7") and info["complete"]
    assert info["address"] == "redis://:***@127.0.0.1:1/0"
    assert keys["training:"] == 1 and keys["eegfs:feast:"] == 1 and keys["(other)"] == 1
    assert mongo["answering"] and mongo["address"] == "mongodb://u:***@h:1/" and mongo["version"]
    assert "experiments" in mongo["collections"]["collection"].tolist()


def test_health_when_servers_are_away():
    dead_redis = redis_client(f"redis://:pw@127.0.0.1:{free_port()}/0", timeout_s=0.5)
    info = health.redis_health(dead_redis, "redis://:pw@127.0.0.1:1/0")
    assert not info["answering"] and info["error"] and "pw@" not in info["address"]
    client = mongo_client(f"mongodb://127.0.0.1:{free_port()}/", timeout_ms=300)
    try:
        mongo = health.mongo_health(client, "mongodb://127.0.0.1:1/", "x")
    finally:
        client.close()
    assert not mongo["answering"] and mongo["error"]


def test_spooled_writes_are_counted_with_their_writer(tmp_path):
    import socket

    spool = tmp_path / "tracking" / "spool"
    spool.mkdir(parents=True)
    host = socket.gethostname().replace("-", "_")
    mine = spool / f"spool-{host}-{os.getpid()}-abcd1234.jsonl"
    mine.write_text('{"op": 1}\n{"op": 2}\n')
    dead_pid = 2**22 + 12345
    gone = spool / f"spool-{host}-{dead_pid}-ffff0000.jsonl"
    gone.write_text('{"op": 1}\n{"op": 2}\n{"op": 3}\n{"trunc')
    elsewhere = spool / "spool-otherhost-77-00000000.jsonl"
    elsewhere.write_text('{"op": 1}\n')
    frame = health.spool_frame(tmp_path).set_index("file")
    assert frame.loc[mine.name, "records"] == 2 and frame.loc[mine.name, "writer_running"]
    assert frame.loc[gone.name, "records"] == 3 and frame.loc[gone.name, "writer_running"] is False
    assert frame.loc[elsewhere.name, "writer_running"] is None
    assert health.spool_frame(tmp_path / "empty").empty
