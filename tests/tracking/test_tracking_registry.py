"""Model registry: versions, aliases, lineage, loading on another machine with checksums."""

from __future__ import annotations

import pytest
import torch
from tracking_testlib import start_example_run

from tracking import ChecksumMismatchError, NotFoundError
from tracking.registry import ModelRegistry


def _trained(tracker, tmp_path, name="c2-eegnex", upload=False):
    run = start_example_run(tracker, name=name)
    ids = []
    for epoch in range(2):
        state = {"weight": torch.full((3, 2), float(epoch)), "bias": torch.zeros(2)}
        path = tmp_path / name / f"epoch{epoch}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        ids.append(
            run.log_checkpoint(
                path,
                epoch=epoch,
                metrics={"val_loss": 1.0 - epoch / 4},
                is_best=True,
                upload=upload,
            )
        )
    run.finish()
    tracker.flush()
    return run, ids


def test_versions_aliases_and_lineage(tracker, db, tmp_path):
    run, (first, second) = _trained(tracker, tmp_path)
    registry = ModelRegistry(db)
    v1 = registry.register("eegnex-c2", first, description="baseline", aliases=["candidate"])
    v2 = registry.register("eegnex-c2", second)
    assert (v1["version"], v2["version"]) == (1, 2)
    assert registry.register("eegnex-c2", second)["version"] == 2  # same file: same version
    lineage = v2["lineage"]
    assert lineage["experiment_id"] == run.id and lineage["epoch"] == 1
    assert lineage["feature_service"] == "eeg_inputs_v1" and lineage["snapshot_id"] == "abc123"
    assert lineage["code_commit"] == "0" * 40 and lineage["checkpoint_sha256"] == v2["sha256"]

    registry.set_alias("eegnex-c2", "production", 1)
    assert registry.get_version("eegnex-c2", "production")["version"] == 1
    registry.set_alias("eegnex-c2", "production", 2)  # move
    assert registry.get_version("eegnex-c2", "production")["version"] == 2
    assert registry.get_version("eegnex-c2", "candidate")["version"] == 1
    assert registry.get_version("eegnex-c2", "latest")["version"] == 2
    assert registry.get_version("eegnex-c2", "2")["aliases"] == ["production"]
    assert [v["aliases"] for v in registry.list_versions("eegnex-c2")] == [
        ["candidate"],
        ["production"],
    ]
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        registry.get_version("eegnex-c2", "staging")
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.set_alias("eegnex-c2", "production", 7)
    with pytest.raises(ValueError, match="version number"):
        registry.set_alias("eegnex-c2", "3", 1)
    with pytest.raises(NotFoundError, match="no registered model"):
        registry.get_version("nope", 1)


def test_best_checkpoint_of_a_run_and_of_the_latest_run(tracker, db, tmp_path):
    registry = ModelRegistry(db)
    with pytest.raises(NotFoundError, match="no completed run with a checkpoint"):
        registry.best_checkpoint_of("latest")
    older, (_, older_best) = _trained(tracker, tmp_path, name="older")
    newer, (_, newer_best) = _trained(tracker, tmp_path, name="newer")
    assert registry.best_checkpoint_of(older.id) == older_best
    assert registry.best_checkpoint_of(str(newer.id)) == newer_best
    assert registry.best_checkpoint_of("latest") == newer_best
    assert registry.best_checkpoint_of("latest", challenge=2) == newer_best
    with pytest.raises(NotFoundError, match="no completed run of challenge 1"):
        registry.best_checkpoint_of("latest", challenge=1)
    # A newer completed run without checkpoints is not "latest", and cannot be registered.
    bare = start_example_run(tracker, name="no-checkpoint")
    bare.finish()
    tracker.flush()
    assert registry.best_checkpoint_of("latest") == newer_best
    with pytest.raises(NotFoundError, match="has no best checkpoint"):
        registry.best_checkpoint_of(bare.id)
    with pytest.raises(NotFoundError, match="no run 0123456789abcdef01234567"):
        registry.best_checkpoint_of("0123456789abcdef01234567")
    with pytest.raises(ValueError, match="not-an-id"):
        registry.best_checkpoint_of("not-an-id")


def test_load_model_on_another_machine_from_gridfs(tracker, db, tmp_path):
    _, (_, best) = _trained(tracker, tmp_path)  # not uploaded while training
    registry = ModelRegistry(db)
    version = registry.register("eegnex-c2", best, aliases=["production"])
    assert version["portable"] is True  # registering uploaded it
    for path in (tmp_path / "c2-eegnex").iterdir():
        path.unlink()  # "another machine": the original files are not here
    state = tracker.load_model("eegnex-c2", "production", tmp_path / "models")
    assert torch.equal(state["weight"], torch.ones(3, 2))
    assert (tmp_path / "models" / "eegnex-c2-v1-epoch1.pt").is_file()


def test_load_model_refuses_a_corrupt_copy(tracker, db, tmp_path):
    _, (_, best) = _trained(tracker, tmp_path, upload=True)
    registry = ModelRegistry(db)
    version = registry.register("m", best)
    (tmp_path / "c2-eegnex" / "epoch1.pt").unlink()
    chunk = db["fs.chunks"].find_one({"files_id": version["gridfs_id"]})
    db["fs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(len(chunk["data"]))}})
    with pytest.raises(ChecksumMismatchError, match=version["sha256"]):
        registry.load_model("m", 1, tmp_path / "models")
    assert not list((tmp_path / "models").glob("*.pt"))


class NotWeights:
    """An arbitrary object: torch.load(weights_only=True) refuses to unpickle it."""


def test_load_model_uses_weights_only(tracker, db, tmp_path):
    run = start_example_run(tracker)
    path = tmp_path / "evil.pt"
    torch.save({"obj": NotWeights()}, path)
    ckpt = run.log_checkpoint(path, epoch=0, metrics={"val_loss": 1.0})
    tracker.flush()
    ModelRegistry(db).register("evil", ckpt)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        ModelRegistry(db).load_model("evil", 1, tmp_path / "models")
