"""Backup/restore roundtrip, and the CLI end to end (migrate, list, show, best, compare, sync...)."""

from __future__ import annotations

import gzip
import json

import gridfs
import pytest
from click.testing import CliRunner
from tracking_testlib import SHARED_FIXTURES, start_example_run

from eegfs.cli import cli
from services.connections import mongo_client
from tracking.backup import backup_database, restore_database
from tracking.errors import BackupError
from tracking.migrate import migrate_sqlite

FIXTURE = SHARED_FIXTURES / "eeg2025_metadata.db"


def _everything(database) -> dict:
    out = {}
    for name in sorted(database.list_collection_names()):
        if name.startswith("system."):
            continue
        docs = list(database[name].find({}, sort=[("_id", 1)]))
        if name == "fs.chunks":  # chunk ids are rebuilt; compare what they hold
            docs = sorted((d["files_id"], d["n"], bytes(d["data"])) for d in docs)
        out[name] = docs
    return out


def test_backup_restore_roundtrip(tracker, db, tmp_path, settings):
    migrate_sqlite(db, FIXTURE)
    run = start_example_run(tracker)
    run.log_epoch(0, {"val_loss": float("nan"), "train_loss": 1.5})
    for step in range(1200):
        run.log_metrics({"loss": step / 7}, step=step)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(bytes(range(256)) * 2000)  # 512 kB: two GridFS chunks
    run.log_checkpoint(ckpt, epoch=0, metrics={"val_loss": 0.5}, is_best=True, upload=True)
    run.finish()
    tracker.flush()
    before = _everything(db)

    report = backup_database(db, tmp_path / "backup")
    assert report.gridfs_files == 1 and report.collections["experiments"] == 38
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert "fs.chunks" not in manifest["collections"]
    with pytest.raises(BackupError, match="not empty"):
        backup_database(db, tmp_path / "backup")

    client = mongo_client(settings.mongo_uri)
    target = client[f"{settings.mongo_db}_restored"]
    try:
        restore_database(target, tmp_path / "backup")
        restored = _everything(target)
        # NaN != NaN: compare the experiments' repr, which prints nan the same way.
        assert repr(restored) == repr(before)
        data = (
            gridfs.GridFSBucket(target)
            .open_download_stream(
                target.checkpoints.find_one({"gridfs_id": {"$ne": None}})["gridfs_id"]
            )
            .read()
        )
        assert data == ckpt.read_bytes()
        assert target.epochs.index_information()["experiment_epoch"]["unique"] is True
        restore_database(target, tmp_path / "backup")  # rerun: no duplicates
        assert repr(_everything(target)) == repr(before)
    finally:
        client.drop_database(target.name)
        client.close()


def test_damaged_backup_is_refused_before_writing(db, tmp_path, settings):
    migrate_sqlite(db, FIXTURE)
    backup_database(db, tmp_path / "b")
    path = tmp_path / "b" / "collections" / "experiments.jsonl.gz"
    with gzip.open(path, "at") as fh:
        fh.write("{}\n")
    client = mongo_client(settings.mongo_uri)
    target = client[f"{settings.mongo_db}_r"]
    try:
        with pytest.raises(BackupError, match="experiments.jsonl.gz: sha256"):
            restore_database(target, tmp_path / "b")
        assert target.list_collection_names() == []
    finally:
        client.drop_database(target.name)
        client.close()
    with pytest.raises(BackupError, match="no manifest.json"):
        restore_database(db, tmp_path)


def _run(env, *args):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def test_cli_migrate_then_list_show_best_compare(cli_env, db, tmp_path):
    dry = _run(cli_env, "migrate-sqlite", str(FIXTURE), "--dry-run")
    assert (
        dry.exit_code == 0
        and "would insert" in dry.output
        and db.experiments.count_documents({}) == 0
    )
    first = _run(cli_env, "migrate-sqlite", str(FIXTURE))
    assert first.exit_code == 0, first.output
    assert "training_runs" in first.output and "37" in first.output
    second = _run(cli_env, "migrate-sqlite", str(FIXTURE))
    assert second.exit_code == 0 and db.experiments.count_documents({}) == 37

    listed = _run(cli_env, "runs", "list", "--limit", "0")
    assert listed.exit_code == 0 and "37 run(s)" in listed.output and "stale" in listed.output
    ids = [str(d["_id"]) for d in db.experiments.find({"last_epoch": {"$ne": None}})]
    assert all(i in listed.output for i in ids)
    as_json = json.loads(
        _run(cli_env, "runs", "list", "--metric", "val_loss<0.01", "--json").output
    )
    assert len(as_json) == 2
    shown = _run(cli_env, "runs", "show", ids[0])
    assert shown.exit_code == 0 and "epochs" in shown.output and "checkpoints" in shown.output
    best = _run(cli_env, "runs", "best", "-n", "2")
    assert best.exit_code == 0 and "challenge 2" in best.output
    plot = tmp_path / "curves.png"
    compared = _run(cli_env, "runs", "compare", *ids, "--plot", str(plot))
    assert compared.exit_code == 0 and "val_loss" in compared.output
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_are_one_clear_line(cli_env):
    bad = _run(cli_env, "runs", "show", "12345")
    assert (
        bad.exit_code == 1
        and "not a valid ObjectId" in bad.output
        and "Traceback" not in bad.output
    )
    missing = _run(cli_env, "runs", "show", "0" * 24)
    assert missing.exit_code == 1 and "no experiment" in missing.output
    metric = _run(cli_env, "runs", "list", "--metric", "val_loss")
    assert metric.exit_code == 2 and "not understood" in metric.output


def test_cli_unreachable_server_masks_the_password(cli_env):
    env = dict(
        cli_env, MONGO_URI="mongodb://alice:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    )
    result = _run(env, "runs", "list")
    assert result.exit_code == 1 and "does not answer" in result.output
    assert "hunter2" not in result.output and "alice:***@" in result.output


def test_cli_sync_models_subjects_datasets_backup(cli_env, tracker, db, tmp_path, settings):
    run = start_example_run(tracker)
    path = tmp_path / "w.pt"
    import torch

    torch.save({"w": torch.ones(2)}, path)
    ckpt = run.log_checkpoint(path, epoch=0, metrics={"val_loss": 0.1}, is_best=True)
    run.finish()
    tracker.flush()
    assert _run(cli_env, "runs", "sync").exit_code == 0
    reg = _run(cli_env, "models", "register", "eegnex", str(ckpt), "--alias", "candidate")
    assert reg.exit_code == 0 and "eegnex v1" in reg.output
    # The run's best checkpoint is that same file: the same version, now also aliased.
    again = _run(cli_env, "models", "register", "eegnex", "--run", "latest", "--alias", "demo")
    assert again.exit_code == 0 and f"eegnex v1 <- checkpoint {ckpt}" in again.output
    assert f"the best of run {run.id}" in again.output
    by_id = _run(cli_env, "models", "register", "other", "--run", str(run.id))
    assert by_id.exit_code == 0 and f"other v1 <- checkpoint {ckpt}" in by_id.output
    assert _run(cli_env, "models", "alias", "eegnex", "production", "1").exit_code == 0
    shown = _run(cli_env, "models", "show", "eegnex")
    assert "production" in shown.output and "eeg_inputs_v1" in shown.output
    fetched = _run(
        cli_env, "models", "fetch", "eegnex", "production", "--dest", str(tmp_path / "m")
    )
    assert fetched.exit_code == 0 and fetched.output.strip() == str(path)

    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\trelease_number\tsex\tage\nsub-NDARAA001\tR1\tF\tn/a\n")
    synced = _run(cli_env, "subjects", "sync", "--participants", str(tsv))
    assert (
        synced.exit_code == 0
        and "1 new" in synced.output
        and "no per-subject feature" in synced.output
    )
    assert '"NDARAA001"' in _run(cli_env, "subjects", "show", "sub-NDARAA001").output

    import h5py
    import numpy as np

    h5 = tmp_path / "c2.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("data", data=np.zeros((2, 129, 400), np.float32))
        f.create_dataset("subjects", data=np.array([b"NDARAA001"] * 2))
        f.attrs.update(sfreq=100, release="R3", n_windows=2, n_channels=129, n_times=400)
    registered = _run(cli_env, "datasets", "register", str(h5))
    assert registered.exit_code == 0 and "2x129x400" in registered.output
    assert "R3" in _run(cli_env, "datasets", "list").output

    backup = _run(cli_env, "backup", str(tmp_path / "bk"))
    assert backup.exit_code == 0 and (tmp_path / "bk" / "manifest.json").is_file()
    restored = _run(
        dict(cli_env, MONGO_DB=settings.mongo_db + "_cli"), "restore", str(tmp_path / "bk")
    )
    try:
        assert restored.exit_code == 0 and "restored" in restored.output
    finally:
        client = mongo_client(settings.mongo_uri)
        client.drop_database(settings.mongo_db + "_cli")
        client.close()


def test_cli_watch_prints_epochs_of_a_finished_run(cli_env, tracker):
    run = start_example_run(tracker)
    run.log_epoch(0, {"val_loss": 0.5})
    run.log_epoch(1, {"val_loss": 0.25})
    run.finish()
    tracker.flush()
    for extra in ([], ["--poll", "--interval", "0.1"]):
        result = _run(cli_env, "runs", "watch", str(run.id), "--timeout", "30", *extra)
        assert result.exit_code == 0, result.output
        lines = [line for line in result.output.splitlines() if "epoch" in line]
        assert len(lines) == 2 and "val_loss=0.25" in lines[1]
