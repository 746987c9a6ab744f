"""SQLite migration of the real EEG2025 run log (tests/fixtures, copied from ../shared/fixtures) and of a synthetic one."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from tracking_testlib import SHARED_FIXTURES

from tracking.errors import MigrationError
from tracking.migrate import migrate_sqlite
from tracking.queries import best_runs

FIXTURE = SHARED_FIXTURES / "eeg2025_metadata.db"


def _rows(path: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_fixture_is_there():
    assert FIXTURE.is_file(), (
        f"{FIXTURE} is missing: the tests expect shared/ beside the repository"
    )


def test_real_database_migrates_every_row_twice_without_duplicates(db):
    counts = {
        t: _rows(FIXTURE, f"SELECT count(*) FROM {t}")[0][0]
        for t in ("training_runs", "epoch_history", "model_checkpoints", "subjects", "cache_files")
    }
    first = migrate_sqlite(db, FIXTURE)
    assert first.tables["training_runs"].inserted == counts["training_runs"] == 37
    assert first.tables["epoch_history"].inserted == counts["epoch_history"]
    assert first.tables["model_checkpoints"].inserted == counts["model_checkpoints"]
    assert db.experiments.count_documents({}) == counts["training_runs"]
    assert db.epochs.count_documents({}) == counts["epoch_history"]
    assert db.checkpoints.count_documents({}) == counts["model_checkpoints"]

    second = migrate_sqlite(db, FIXTURE)
    assert second.inserted == 0
    assert second.tables["training_runs"].existing == 37
    assert db.experiments.count_documents({}) == 37
    assert db.epochs.count_documents({}) == counts["epoch_history"]
    assert db.migrations.count_documents({}) == 1
    source = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert (
        db.experiments.count_documents({"legacy.source": source, "legacy.table": "training_runs"})
        == 37
    )


def test_real_database_quirks_are_mapped(db):
    report = migrate_sqlite(db, FIXTURE, timezone="Europe/Paris")
    # Every run was left "running": stale now, with the original status kept.
    assert db.experiments.count_documents({"status": "stale", "original_status": "running"}) == 37
    # NULL best_val_loss although epochs exist: derived from the epochs.
    run35 = db.experiments.find_one({"legacy.table": "training_runs", "legacy.id": 35})
    epochs35 = [
        r["val_loss"]
        for r in _rows(FIXTURE, "SELECT val_loss FROM epoch_history WHERE run_id = 35")
    ]
    assert run35["summary"]["best_val_loss"] == min(epochs35)
    assert "best_val_loss" in run35["legacy"]["derived"]
    assert run35["config"]["optimizer"] == "Adamax" and run35["model"]["architecture"] == "EEGNeX"
    # Naive local timestamps, read as Paris time (UTC+2 in October), stored in UTC.
    raw = _rows(FIXTURE, "SELECT start_time FROM training_runs WHERE run_id = 35")[0][0]
    assert raw.startswith("2025-10-21T23:30:21")
    assert run35["started_at"].isoformat().startswith("2025-10-21T21:30:21")
    assert run35["legacy"]["timezone_assumed"] == "Europe/Paris"
    # Two checkpoints flagged best (blob booleans) for runs 34 and 35: the lowest val_loss wins.
    for run_id in (34, 35):
        exp = db.experiments.find_one({"legacy.table": "training_runs", "legacy.id": run_id})
        ckpts = list(db.checkpoints.find({"experiment_id": exp["_id"]}))
        assert len(ckpts) == 2 and all(c["legacy"]["is_best_original"] is True for c in ckpts)
        best = [c for c in ckpts if c["is_best"]]
        assert len(best) == 1 and best[0]["metrics"]["val_loss"] == min(
            c["metrics"]["val_loss"] for c in ckpts
        )
        assert exp["best_checkpoint"]["id"] == best[0]["_id"]
    # A run's summary never disagrees with its best checkpoint (the SQLite value: legacy.row).
    for exp in db.experiments.find({"best_checkpoint": {"$ne": None}}):
        assert exp["summary"]["best_epoch"] == exp["best_checkpoint"]["epoch"]
    # Absolute paths to files that are not here: kept, checksums unverifiable, sizes unknown.
    for c in db.checkpoints.find({}):
        assert c["path"].startswith("/home/") and c["sha256"] is None and c["size_bytes"] is None
        assert c["checksum_status"].startswith("unverifiable")
    # Every column of every row is kept under legacy.row.
    for table, collection, key in (
        ("training_runs", "experiments", "run_id"),
        ("epoch_history", "epochs", "id"),
        ("model_checkpoints", "checkpoints", "checkpoint_id"),
    ):
        for row in _rows(FIXTURE, f"SELECT * FROM {table}"):
            doc = db[collection].find_one({"legacy.table": table, "legacy.id": row[key]})
            assert set(doc["legacy"]["row"]) == set(row.keys())
    # config table and the views' output are kept in the migration document.
    migration = db.migrations.find_one({})
    assert migration["config"]["db_version"]["value"] == "1.0"
    assert migration["timezone_assumed"] == "Europe/Paris"
    assert len(migration["views"]["best_models"]) == 37
    assert any("best_models" in note for note in report.notes)
    # The runs are queryable: best by val_loss replaces the best_models view.
    best = best_runs(db, metric="val_loss", n=3)[2]
    assert best[0]["legacy"]["id"] == 32  # val_loss 8.4e-05


def test_dry_run_writes_nothing(db):
    report = migrate_sqlite(db, FIXTURE, dry_run=True)
    assert report.tables["training_runs"].inserted == 37
    assert db.list_collection_names() == []


def _synthetic(tmp_path: Path) -> Path:
    src = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    path = tmp_path / "legacy.db"
    dst = sqlite3.connect(path)
    src.backup(dst)
    src.close()
    cache = tmp_path / "cache.h5"
    cache.write_bytes(b"cached windows")
    ckpt = tmp_path / "run1.pth"
    ckpt.write_bytes(b"weights")
    dst.executescript(
        """
        INSERT INTO epoch_history (run_id, epoch, train_loss, val_loss, learning_rate, duration_seconds, timestamp)
            VALUES (1, 1, 0.9, 0.8, 0.002, 60, '2025-10-19T19:00:00'),
                   (1, 1, 0.7, 0.6, 0.002, 61, '2025-10-19T19:01:00'),
                   (999, 1, 0.1, 0.1, 0.002, 1, 'not a time');
        INSERT INTO subjects VALUES ('sub-NDARAA111', 10.5, 'F', 0.3, 'R1', 2, 40, 0.9, 'noisy Cz');
        INSERT INTO training_runs (challenge, model_name, start_time, status, config)
            VALUES (1, 'broken', 'yesterday', 'completed', '{not json');
        """
    )
    dst.execute(
        "INSERT INTO model_checkpoints (run_id, epoch, val_loss, file_path, file_size_mb, timestamp, is_best)"
        " VALUES (1, 1, 0.6, ?, 0.5, '2025-10-19T19:01:00', 1)",
        (str(ckpt),),
    )
    dst.execute(
        "INSERT INTO cache_files (challenge, release, file_path, file_size_mb, n_windows, n_channels,"
        " n_times, created_at, checksum) VALUES (2, 'R1', ?, 1.0, 10, 129, 400, '2025-10-19T10:00:00', ?)",
        (str(cache), hashlib.sha256(b"cached windows").hexdigest()),
    )
    dst.commit()
    dst.close()
    return path


def test_synthetic_quirks(db, tmp_path):
    path = _synthetic(tmp_path)
    report = migrate_sqlite(db, path)
    run1 = db.experiments.find_one({"legacy.table": "training_runs", "legacy.id": 1})
    epochs = list(db.epochs.find({"experiment_id": run1["_id"]}))
    assert len(epochs) == 1 and epochs[0]["metrics"]["val_loss"] == 0.6  # the later duplicate wins
    assert len(epochs[0]["legacy"]["merged_ids"]) == 1
    assert report.tables["epoch_history"].skipped == 2  # one duplicate, one orphan
    ckpt = db.checkpoints.find_one({"experiment_id": run1["_id"]})
    assert ckpt["sha256"] == hashlib.sha256(b"weights").hexdigest() and ckpt["is_best"] is True
    assert ckpt["checksum_status"].startswith("verified")
    broken = db.experiments.find_one({"name": "broken"})
    assert broken["config"] == {"raw": "{not json"} and broken["status"] == "completed"
    assert broken["started_at"] is None and broken["legacy"]["row"]["start_time"] == "yesterday"
    subject = db.subjects.find_one({"subject_id": "NDARAA111"})
    assert (
        subject["age"] == 10.5 and subject["releases"] == ["R1"] and subject["sessions_count"] == 2
    )
    assert subject["annotations"][0]["text"] == "noisy Cz"
    dataset = db.datasets.find_one({})
    assert dataset["sha256"] == hashlib.sha256(b"cached windows").hexdigest()
    assert dataset["checksum"]["status"] == "verified" and dataset["samples"] == 400
    assert migrate_sqlite(db, path).inserted == 0


def test_not_an_eeg2025_database_is_a_clear_error(db, tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE runs (id INTEGER)")
    conn.close()
    with pytest.raises(MigrationError, match="training_runs.*missing.*found runs"):
        migrate_sqlite(db, other)
    text = tmp_path / "notes.txt"
    text.write_text("hello " * 200)
    with pytest.raises(MigrationError, match="not an SQLite database"):
        migrate_sqlite(db, text)
    with pytest.raises(MigrationError, match="unknown timezone"):
        migrate_sqlite(db, FIXTURE, timezone="Mars/Olympus")
    assert db.experiments.count_documents({}) == 0


def test_changed_source_is_reported(db, tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copy(FIXTURE, copy)
    migrate_sqlite(db, copy)
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE config SET value = ? WHERE key = 'db_version'", (json.dumps("1.1"),))
    conn.commit()
    conn.close()
    report = migrate_sqlite(db, copy)
    assert any("another content hash" in note for note in report.notes)
