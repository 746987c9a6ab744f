"""Whole runs on the small demo data, recorded in MongoDB and streamed on Redis (real servers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.connections import redis_client
from services.local import stop_process
from tracking import Tracker
from training.checkpoints import load_checkpoint
from training.config import TrainConfig
from training.live import channel_name, state_key
from training.runner import train


def _config(env, **kw) -> TrainConfig:
    return env.small_config(**{"log_every": 2, **kw})


def _history(settings, experiment_id):
    with Tracker(settings) as tracker:
        return tracker.run_history(experiment_id)


def _drain(pubsub) -> list[dict]:
    messages = []
    misses = 0
    while misses < 3:
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg is None:
            misses += 1
            continue
        messages.append({"channel": msg["channel"].decode(), **json.loads(msg["data"])})
    return messages


def test_run_is_recorded_and_streamed_live(train_settings, feature_env):
    client = redis_client(train_settings.redis_url)
    pubsub = client.pubsub()
    pubsub.psubscribe("training:*")
    try:
        result = train(
            train_settings,
            _config(feature_env, epochs=2, workers=2, features="online", name="recorded"),
            progress=False,
        )
        messages = [m for m in _drain(pubsub) if m["experiment_id"] == result.experiment_id]
        state = client.hgetall(state_key(result.experiment_id))
    finally:
        pubsub.close()
        client.close()

    hist = _history(train_settings, result.experiment_id)
    exp = hist["experiment"]
    assert exp["status"] == "completed" and exp["name"] == "recorded"
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1]
    for e in hist["epochs"]:
        for key in (
            "train_loss",
            "val_loss",
            "val_nrmse",
            "val_subject_nrmse",
            "lr",
            "duration_s",
            "batches_per_s",
            "val_subject_mean_predictor_nrmse",
            "feature_lookup_ms",
        ):
            assert key in e["metrics"], key
    assert hist["steps"] and all("loss" in p["values"] for p in hist["steps"])
    ckpts = hist["checkpoints"]
    assert [c["epoch"] for c in ckpts] == [0, 1]
    assert sum(c["is_best"] for c in ckpts) == 1
    for c in ckpts:
        assert hashlib.sha256(Path(c["path"]).read_bytes()).hexdigest() == c["sha256"]
    best = next(c for c in ckpts if c["is_best"])
    assert result.best_checkpoint == best["path"] and best["epoch"] == result.best_epoch
    assert exp["features"]["service"] == "challenge2_inputs_v1"
    assert exp["features"]["snapshot_id"].startswith("fs_")
    assert exp["data"]["dropped_missing_target"] > 0
    assert exp["data"]["splits"]["train"]["subjects"] + exp["data"]["splits"]["val"][
        "subjects"
    ] == len({s for r in feature_env.demo.subjects.values() for s in r}) - len(
        exp["data"]["subjects_without_target"]
    )
    assert exp["config"]["train"]["features"] == "online"
    assert exp["code"]["commit"]
    assert "val_subject_nrmse" in exp["summary"] and "mean_predictor_nrmse" in exp["summary"]
    assert "epoch   1" in exp["log"]["text"]
    payload = load_checkpoint(Path(best["path"]))
    assert payload.loop_state.next_epoch == best["epoch"] + 1 and payload.epoch == best["epoch"]

    kinds = [m["type"] for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    assert "step" in kinds
    assert all(m["channel"] == channel_name(result.experiment_id) for m in messages)
    last_epoch = [m for m in messages if m["type"] == "epoch"][-1]
    assert last_epoch["epoch"] == 1 and "val_subject_nrmse" in last_epoch
    assert messages[-1]["status"] == "completed"
    assert state[b"status"] == b"completed"
    assert json.loads(state[b"last_epoch"])["epoch"] == 1
    assert result.live["sent"] == len(messages) and result.live["dropped"] == 0


def test_a_run_that_raises_ends_failed_with_its_traceback(train_settings, feature_env):
    def explode(text: str) -> None:
        if text.startswith("epoch"):
            raise RuntimeError("injected failure after the first epoch")

    with pytest.raises(RuntimeError, match="injected"):
        train(train_settings, _config(feature_env, epochs=2), progress=False, echo=explode)
    with Tracker(train_settings) as tracker:
        runs = tracker.search_runs()
        assert len(runs) == 1
        doc = tracker.get_run(runs[0]["_id"])
    assert doc["status"] == "failed"
    assert "injected failure" in doc["error"]
    assert "RuntimeError" in doc["traceback"] and "explode" in doc["traceback"]
    assert "experiment" in doc["log"]["text"], "the log is stored on failure too"


def test_resume_continues_at_the_next_epoch(train_settings, feature_env):
    first = train(
        train_settings, _config(feature_env, epochs=1, features="historical"), progress=False
    )
    assert first.last_epoch == 0
    steps_before = max(p["step"] for p in _history(train_settings, first.experiment_id)["steps"])
    second = train(
        train_settings, resume=first.experiment_id, overrides={"epochs": 3}, progress=False
    )
    assert second.experiment_id == first.experiment_id
    assert second.resumed_from_epoch == 0
    assert [h["epoch"] for h in second.history] == [0, 1, 2]
    assert second.epochs_run == 2
    hist = _history(train_settings, first.experiment_id)
    assert hist["experiment"]["status"] == "completed"
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1, 2]
    assert len(hist["resumes"]) == 1
    assert hist["experiment"]["features"]["frame_sha256"] == first.features["frame_sha256"]
    steps = [p["step"] for p in hist["steps"]]
    later = [s for s in steps if s > steps_before]
    assert len(steps) == len(set(steps)), "the step counter continues, never restarts"
    assert later and min(later) <= steps_before + 2  # log_every=2
    with pytest.raises(ValueError, match="cannot change when resuming"):
        train(train_settings, resume=first.experiment_id, overrides={"seed": 4}, progress=False)


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_run_completes_when_redis_is_stopped_or_hung(
    train_settings, feature_env, start_local_redis, outage
):
    import os
    import signal

    server = start_local_redis()
    if outage == "stopped":
        stop_process(server.pid)
    else:
        os.kill(server.pid, signal.SIGSTOP)
    try:
        settings = train_settings.with_overrides(redis_url=server.uri)
        result = train(
            settings,
            _config(feature_env, epochs=2, features="historical", log_every=1),
            progress=False,
        )
    finally:
        if outage == "hung":
            os.kill(server.pid, signal.SIGCONT)
    assert result.last_epoch == 1
    assert result.live["sent"] == 0 and result.live["dropped"] > 0
    assert _history(train_settings, result.experiment_id)["experiment"]["status"] == "completed"


def test_challenge1_run_on_the_other_layout(train_settings, feature_env):
    result = train(
        train_settings,
        _config(
            feature_env, challenge=1, data=feature_env.c1_files, features="online", val_release="R2"
        ),
        progress=False,
    )
    assert result.primary_metric == "val_nrmse" and result.goal_nrmse is None
    assert result.data["split"]["how"] == "release" and result.data["crop_samples"] is None
    assert result.features["service"] == "challenge1_inputs_v1"


def test_cli_train_prints_the_summary(train_settings, feature_env):
    from eegfs.cli import cli

    runner = CliRunner(
        env={
            "REDIS_URL": train_settings.redis_url,
            "MONGO_URI": train_settings.mongo_uri,
            "MONGO_DB": train_settings.mongo_db,
            "EEGFS_DATA_DIR": str(train_settings.data_dir),
            "EEGFS_FEATURE_REPO": str(train_settings.feature_repo),
        }
    )
    out = runner.invoke(
        cli,
        [
            "train",
            "--challenge",
            "2",
            "--data",
            *feature_env.c2_files,
            "--epochs",
            "1",
            "--workers",
            "0",
            "--features",
            "none",
            "--batch-size",
            "8",
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    for text in (
        "experiment",
        "best epoch",
        "subject-level",
        "mean predictor",
        "goal",
        "checkpoint",
        "eegfs runs show",
    ):
        assert text in out.output
    bad = runner.invoke(cli, ["train", "--resume", "0" * 24, "--data", feature_env.c2_files[0]])
    assert bad.exit_code == 2 and "--resume" in bad.output
    missing = runner.invoke(cli, ["train", "--challenge", "2"])
    assert missing.exit_code == 2 and "--data" in missing.output


def test_ctrl_c_marks_the_run_stopped(train_settings, feature_env):
    def interrupt(text: str) -> None:
        if text.startswith("epoch"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_settings, _config(feature_env, epochs=3), progress=False, echo=interrupt)
    with Tracker(train_settings) as tracker:
        (run,) = tracker.search_runs()
        doc = tracker.get_run(run["_id"])
        hist = tracker.run_history(run["_id"])
    assert doc["status"] == "stopped"
    assert [c["epoch"] for c in hist["checkpoints"]] == [0], "the epoch that ended is kept"


def test_cuda_is_used_only_when_asked_and_available():
    import torch

    from training.errors import TrainingError
    from training.prepare import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(TrainingError, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu:x")
