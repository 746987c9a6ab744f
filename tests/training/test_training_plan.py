"""Checkpoint files, the run plan (fresh or resumed) and the identical-run check (real servers)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tracking import Tracker
from training.checkpoints import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    checkpoint_dir,
    checkpoint_file,
    load_checkpoint,
    save_checkpoint,
)
from training.claiming import Deferred
from training.config import RESUME_OVERRIDABLE, TrainConfig
from training.errors import CheckpointError
from training.features import FeatureScaler
from training.loop import LoopState, TargetScale
from training.normalization import ChannelStats
from training.plan import plan_run
from training.results import TrainResult
from training.runner import train


def _checkpoint(experiment_id: str = "e1", **kw) -> Checkpoint:
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    values = {
        "experiment_id": experiment_id,
        "epoch": 2,
        "model_info": {"name": "linear", "parameters": 4},
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "loop_state": LoopState(next_epoch=3, global_step=30, best_metric=0.5, best_epoch=1),
        "torch_rng_state": torch.get_rng_state(),
        "channel_stats": ChannelStats(np.zeros(3, np.float32), np.ones(3, np.float32), 7),
        "feature_scaler": FeatureScaler(np.ones(2, np.float32), np.full(2, 2.0, np.float32)),
        "feature_columns": ["a", "b"],
        "target_scale": TargetScale(1.5, 0.5),
        "val_subjects": ["NDARAA000001"],
        "config": {"challenge": 2},
        "metrics": {"val_loss": 0.25},
    }
    values.update(kw)
    return Checkpoint(**values)


# --- checkpoint files -------------------------------------------------------------------------
def test_a_checkpoint_round_trips_through_its_file(tmp_path):
    ckpt = _checkpoint()
    path = save_checkpoint(ckpt, checkpoint_file(checkpoint_dir(tmp_path, "e1"), 2))
    assert path == tmp_path / "checkpoints" / "e1" / "epoch_0002.pt"
    got = load_checkpoint(path)
    assert (got.experiment_id, got.epoch, got.model_info) == ("e1", 2, ckpt.model_info)
    assert got.loop_state == ckpt.loop_state and got.target_scale == ckpt.target_scale
    assert got.feature_columns == ["a", "b"] and got.val_subjects == ["NDARAA000001"]
    np.testing.assert_array_equal(got.channel_stats.std, ckpt.channel_stats.std)
    np.testing.assert_array_equal(got.feature_scaler.mean, ckpt.feature_scaler.mean)
    assert torch.equal(got.torch_rng_state, ckpt.torch_rng_state)
    assert torch.equal(got.model_state["weight"], ckpt.model_state["weight"])
    assert got.metrics == {"val_loss": 0.25}
    bare = _checkpoint(channel_stats=None, feature_scaler=None, feature_columns=None)
    back = load_checkpoint(save_checkpoint(bare, tmp_path / "bare.pt"))
    assert back.channel_stats is None and back.feature_scaler is None


def _save_payload(path, payload):
    with open(path, "wb") as f:
        torch.save(payload, f)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: {**p, "format": CHECKPOINT_FORMAT + 1}, "checkpoint format 2, expected 1"),
        (
            lambda p: {k: v for k, v in p.items() if k != "val_subjects"},
            "lacks \\['val_subjects'\\]",
        ),
        (lambda p: {**p, "epoch": "two"}, "unexpected types {'epoch': 'str'}"),
        (lambda p: {**p, "target_scale": {"mean": 1.0}}, "malformed"),
        (lambda p: [p], "holds a list, expected a training checkpoint"),
    ],
)
def test_a_checkpoint_of_another_shape_is_refused_naming_the_file(tmp_path, change, message):
    path = _save_payload(tmp_path / "odd.pt", change(_checkpoint().to_payload()))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class Payload:
    """Not a tensor or container: ``weights_only=True`` must refuse to unpickle it."""


def test_checkpoints_with_code_or_garbage_are_not_loaded(tmp_path):
    code = _save_payload(tmp_path / "code.pt", {**_checkpoint().to_payload(), "x": Payload()})
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        load_checkpoint(code)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path):
    path = save_checkpoint(_checkpoint(), tmp_path / "epoch_0002.pt")
    before = path.read_bytes()
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(_checkpoint(metrics={}, config={"f": lambda: 0}), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0002.pt"]  # no temp file left
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(CheckpointError, match="cannot write the checkpoint"):
        save_checkpoint(_checkpoint(), blocker / "epoch_0000.pt")


# --- the plan ---------------------------------------------------------------------------------
def test_a_fresh_plan_validates_and_fixes_the_historical_time(train_settings, feature_env):
    with Tracker(train_settings) as tracker:
        with pytest.raises(ValueError, match="needs a TrainConfig"):
            plan_run(train_settings, tracker)
        with pytest.raises(ValueError, match="only apply when resuming"):
            plan_run(train_settings, tracker, feature_env.small_config(), overrides={"epochs": 3})
        with pytest.raises(ValueError, match="--epochs must be >= 1"):
            plan_run(train_settings, tracker, feature_env.small_config(epochs=0))
        plan = plan_run(train_settings, tracker, feature_env.small_config(features="historical"))
        assert not plan.resumed and plan.checkpoint is None
        assert datetime.fromisoformat(plan.config.as_of).tzinfo is not None
        fixed = feature_env.small_config(features="historical", as_of="2026-01-01T00:00:00+00:00")
        assert plan_run(train_settings, tracker, fixed).config == fixed
        assert tracker.search_runs() == [], "planning records nothing"


def test_resume_overrides_are_the_one_list(feature_env):
    config = feature_env.small_config()
    changed = config.with_resume_overrides({"epochs": 5, "workers": 1, "log_every": 3})
    assert (changed.epochs, changed.workers, changed.log_every) == (5, 1, 3)
    assert set(RESUME_OVERRIDABLE) <= {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ValueError, match="cannot change when resuming"):
        config.with_resume_overrides({"model": "eegnex"})
    with pytest.raises(ValueError, match="--workers must be >= 0"):
        config.with_resume_overrides({"workers": -1})


def _foreign_run(tracker, config: dict):
    return tracker.start_run(
        "elsewhere", 2, model={}, config=config, data={}, features={}, code={"commit": None}
    )


def test_a_resume_that_cannot_start_changes_nothing(train_settings, feature_env, tmp_path):
    with Tracker(train_settings) as tracker:
        foreign = _foreign_run(tracker, {"lr": 0.1})
        foreign.finish("stopped")
        with pytest.raises(CheckpointError, match="not started by eegfs train"):
            plan_run(train_settings, tracker, resume=str(foreign.id))
        early = _foreign_run(tracker, {"train": feature_env.small_config().to_dict()})
        early.finish("failed", error="died in epoch 0")
        with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
            plan_run(train_settings, tracker, resume=str(early.id))
        stolen = _foreign_run(tracker, {"train": feature_env.small_config().to_dict()})
        path = save_checkpoint(_checkpoint("another-experiment"), tmp_path / "epoch_0002.pt")
        stolen.log_checkpoint(path, epoch=2, metrics={"val_loss": 0.25})
        stolen.finish("stopped")
        with pytest.raises(CheckpointError, match="belongs to experiment another-experiment"):
            plan_run(train_settings, tracker, resume=str(stolen.id))
        statuses = {str(r["_id"]): r["status"] for r in tracker.search_runs()}
    assert statuses == {
        str(foreign.id): "stopped",
        str(early.id): "failed",
        str(stolen.id): "stopped",
    }


def test_a_resumed_plan_holds_the_latest_checkpoint(train_settings, feature_env):
    first = train(train_settings, feature_env.small_config(epochs=2), progress=False)
    with Tracker(train_settings) as tracker:
        plan = plan_run(
            train_settings, tracker, resume=first.experiment_id, overrides={"epochs": 4}
        )
        assert tracker.get_run(first.experiment_id)["status"] == "completed"
    assert plan.resumed and plan.resume_id == first.experiment_id
    assert plan.config.epochs == 4 and plan.config.seed == 0
    assert plan.checkpoint.epoch == 1 and plan.checkpoint.loop_state.next_epoch == 2
    assert plan.checkpoint_path.name == "epoch_0001.pt"


# --- eegfs train --skip-if-done: the run is claimed (training.claiming) -----------------------
CLEAN = {"commit": "c" * 40, "dirty": False}


def test_skip_if_done_defers_to_the_identical_run_and_a_dirty_tree_trains(
    train_settings, feature_env, clean_repo
):
    from eegfs.cli import cli

    config = feature_env.small_config(features="online", name="first")
    done = train(train_settings, config, progress=False, skip_if_done=True)
    assert isinstance(done, TrainResult)
    args = ["train", "--challenge", "2", "--data", *feature_env.c2_files, "--epochs", "1"]
    args += ["--batch-size", "8", "--workers", "2", "--no-progress", "--skip-if-done"]
    runner = CliRunner(env=train_settings.to_env())
    out = runner.invoke(cli, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert f"an identical run is already recorded: experiment {done.experiment_id}" in out.output
    with Tracker(train_settings) as tracker:
        assert len(tracker.search_runs()) == 1, "the CLI trained nothing"
    (clean_repo / "code.py").write_text("print('v2')\n")  # uncommitted change: no identity
    out = runner.invoke(cli, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "--skip-if-done: the git tree has uncommitted changes" in out.output
    assert "training anyway" in out.output and "experiment " in out.output
    with Tracker(train_settings) as tracker:
        assert len(tracker.search_runs()) == 2


def test_of_two_skip_if_done_starts_released_together_exactly_one_trains(
    train_settings, feature_env, monkeypatch
):
    """Five rounds, each a new run (its own seed): the two claims meet at a barrier."""
    from training.claiming import RunClaim

    acquire = RunClaim.acquire
    barrier = threading.Barrier(2, timeout=120)

    def acquire_together(self, config, snapshot_id):
        barrier.wait()
        return acquire(self, config, snapshot_id)

    monkeypatch.setattr(RunClaim, "acquire", acquire_together)
    for round_no in range(5):
        config = feature_env.small_config(seed=round_no)
        outcomes, errors = [None, None], []

        def start(i: int, config=config, outcomes=outcomes, errors=errors) -> None:
            try:
                outcomes[i] = train(
                    train_settings, config, progress=False, skip_if_done=True, code=CLEAN
                )
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert errors == []
        trained = [o for o in outcomes if isinstance(o, TrainResult)]
        deferred = [o for o in outcomes if isinstance(o, Deferred)]
        assert len(trained) == 1 and len(deferred) == 1, (round_no, outcomes)
        assert deferred[0].experiment_id == trained[0].experiment_id
        assert trained[0].experiment_id in deferred[0].reason
        assert deferred[0].state in ("running", "completed")
    with Tracker(train_settings) as tracker:
        runs = tracker.search_runs()
        assert len(runs) == 5 and {r["status"] for r in runs} == {"completed"}
        assert tracker.db["claims"].count_documents({"state": "completed"}) == 5


def test_a_claim_whose_holder_failed_is_taken_over(train_settings, feature_env, monkeypatch):
    import training.runner as runner_module
    from training.errors import TrainingError

    config = feature_env.small_config(seed=7)

    def broken(*args, **kwargs):
        raise TrainingError("the model could not be built")

    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "prepare_model", broken)
        with pytest.raises(TrainingError, match="could not be built"):
            train(train_settings, config, progress=False, skip_if_done=True, code=CLEAN)
    with Tracker(train_settings) as tracker:
        (claim,) = tracker.db["claims"].find()
        assert claim["state"] == "failed" and "could not be built" in claim["error"]
        assert tracker.search_runs() == []
    said = []
    again = train(
        train_settings, config, progress=False, skip_if_done=True, code=CLEAN, echo=said.append
    )
    assert isinstance(again, TrainResult)
    assert any(f"took over the claim of experiment {claim['run_id']}" in line for line in said)
    deferred = train(train_settings, config, progress=False, skip_if_done=True, code=CLEAN)
    assert isinstance(deferred, Deferred) and deferred.experiment_id == again.experiment_id
    assert deferred.state == "completed"


def test_the_run_log_keeps_a_record_that_cannot_be_formatted():
    import logging

    from training.runner import _LogCapture

    said = []
    capture = _LogCapture(echo=said.append)
    bad = logging.LogRecord("lib", logging.WARNING, __file__, 1, "%d windows", ("many",), None)
    capture.emit(bad)
    capture.say("epoch   0")
    assert capture.lines[0] == "WARNING lib: <unformattable message>"
    assert capture.lines[1].endswith(" epoch   0") and said == ["epoch   0"]
    assert capture.text().endswith("epoch   0\n")
