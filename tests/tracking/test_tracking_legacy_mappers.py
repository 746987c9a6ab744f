"""The row -> document mappers of the SQLite migration, each on its own (no file, no server)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from bson import ObjectId

from tracking.errors import MigrationError
from tracking.legacy_mappers import (
    MB,
    FileCheck,
    LegacyClock,
    LegacySource,
    best_checkpoint_row,
    epoch_metrics,
    index_epochs,
    legacy_bool,
    map_cache_file,
    map_checkpoint,
    map_epoch,
    map_run,
    map_status,
    map_subject,
    parse_config,
    plain,
    run_summary,
    shared_checkpoint_paths,
    stored_checksum,
)
from tracking.schema import SCHEMA_VERSION

SOURCE = LegacySource("ab" * 32, "/data/eeg2025_metadata.db", "Europe/Paris")
NOW = dt.datetime(2025, 10, 22, 8, 0, tzinfo=dt.UTC)


def _epoch(run_id, epoch, val_loss, row_id, timestamp="2025-10-21T23:40:00"):
    return {
        "id": row_id,
        "run_id": run_id,
        "epoch": epoch,
        "train_loss": 1.0,
        "val_loss": val_loss,
        "learning_rate": 0.002,
        "duration_seconds": 61,
        "timestamp": timestamp,
    }


# --- cells ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (None, None),
        (b"\x01", True),
        (b"\x00", False),
        (memoryview(b"\x00\x01"), True),
        ("true", True),
        (" Yes ", True),
        ("0", False),
        (1, True),
        (0, False),
    ],
)
def test_legacy_bool(cell, expected):
    assert legacy_bool(cell) is expected


def test_plain_cells_are_bson_safe():
    assert plain(b"\x01\xff") == "01ff"
    assert plain(math.nan) is None and plain(math.inf) is None
    assert plain(0.5) == 0.5 and plain("x") == "x" and plain(None) is None


def test_clock_reads_naive_times_in_the_assumed_zone():
    clock = LegacyClock("Europe/Paris")
    assert clock("2025-10-21T23:30:21.123456") == dt.datetime(
        2025, 10, 21, 21, 30, 21, 123000, tzinfo=dt.UTC
    )
    assert clock("2025-01-10T12:00:00+00:00") == dt.datetime(2025, 1, 10, 12, tzinfo=dt.UTC)
    assert clock(None) is None and clock("") is None
    assert clock("yesterday") is None and clock.unparseable == ["yesterday"]
    with pytest.raises(MigrationError, match="unknown timezone 'Mars/Olympus'"):
        LegacyClock("Mars/Olympus")


def test_legacy_section_keeps_the_row():
    legacy = SOURCE.legacy("training_runs", 7, {"run_id": 7, "blob": b"\x01"}, derived=[])
    assert legacy == {
        "source": SOURCE.sha256,
        "table": "training_runs",
        "id": 7,
        "path": SOURCE.path,
        "timezone_assumed": "Europe/Paris",
        "row": {"run_id": 7, "blob": "01"},
        "derived": [],
    }


# --- training_runs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("original", "status"),
    [
        ("running", "stale"),
        ("Completed ", "completed"),
        ("finished", "completed"),
        ("crashed", "failed"),
        ("interrupted", "stopped"),
        ("something else", "stale"),
        (None, "stale"),
    ],
)
def test_map_status(original, status):
    assert map_status(original) == status


def test_parse_config():
    assert parse_config('{"lr": 0.002}') == ({"lr": 0.002}, None)
    assert parse_config("[1, 2]") == ({"value": [1, 2]}, None)
    assert parse_config("{not json") == ({"raw": "{not json"}, "not JSON")
    assert parse_config(None) == ({}, None) and parse_config("") == ({}, None)


def test_run_summary_derives_only_what_is_null():
    epochs = {1: _epoch(3, 1, 0.8, 1), 2: _epoch(3, 2, math.nan, 2), 3: _epoch(3, 3, 0.5, 3)}
    row = {"best_val_loss": None, "best_epoch": None, "total_epochs": None}
    summary, derived = run_summary(row, epochs)
    assert summary == {"val_loss": 0.5, "best_val_loss": 0.5, "best_epoch": 3, "total_epochs": 3}
    assert derived == ["best_val_loss", "best_epoch", "total_epochs"]
    stored = {"best_val_loss": 0.4, "best_epoch": 9, "total_epochs": 10}
    assert run_summary(stored, epochs) == (
        {"val_loss": 0.4, "best_val_loss": 0.4, "best_epoch": 9, "total_epochs": 10},
        [],
    )
    assert run_summary(row, {}) == ({}, [])


def test_map_run():
    clock = LegacyClock("Europe/Paris")
    row = {
        "run_id": 35,
        "challenge": 2,
        "model_name": "EEGNeX",
        "start_time": "2025-10-21T23:30:21",
        "end_time": None,
        "status": "running",
        "config": '{"model": "EEGNeX", "optimizer": "Adamax", "api_key": "s3cret"}',
        "notes": "password=hunter2 on the cluster",
        "best_val_loss": None,
        "best_epoch": None,
        "total_epochs": None,
    }
    epochs = {1: _epoch(35, 1, 0.9, 10), 2: _epoch(35, 2, 0.7, 11, "2025-10-21T23:50:00")}
    doc = map_run(row, epochs, SOURCE, clock)
    assert doc["name"] == "EEGNeX" and doc["challenge"] == 2
    assert doc["model"] == {"name": "EEGNeX", "architecture": "EEGNeX", "parameters": None}
    assert doc["config"]["api_key"] == "***" and "hunter2" not in doc["notes"]
    assert doc["status"] == "stale" and doc["original_status"] == "running"
    assert doc["started_at"] == dt.datetime(2025, 10, 21, 21, 30, 21, tzinfo=dt.UTC)
    assert doc["heartbeat"] == dt.datetime(2025, 10, 21, 21, 50, tzinfo=dt.UTC)
    assert doc["last_epoch"] == 2 and doc["last_metrics"]["val_loss"] == 0.7
    assert doc["summary"]["best_val_loss"] == 0.7 and doc["summary"]["best_epoch"] == 2
    assert doc["legacy"]["derived"] == ["best_val_loss", "best_epoch", "total_epochs"]
    assert "config_error" not in doc["legacy"] and doc["schema_version"] == SCHEMA_VERSION
    assert doc["tags"] == ["migrated"]


def test_map_run_without_epochs_or_json_config():
    row = {"run_id": 4, "model_name": None, "start_time": "2025-10-19T10:00:00", "config": "{x"}
    doc = map_run(row, {}, SOURCE, LegacyClock("UTC"))
    assert doc["name"] == "legacy-run-4" and doc["config"] == {"raw": "{x"}
    assert doc["legacy"]["config_error"] == "not JSON"
    assert doc["heartbeat"] == doc["started_at"] and doc["last_metrics"] == {}
    assert doc["last_epoch"] is None and doc["summary"] == {}


# --- epoch_history -------------------------------------------------------------------------------
def test_index_epochs_keeps_the_last_row_of_a_repeated_epoch():
    rows = [_epoch(1, 1, 0.8, 1), _epoch(1, 1, 0.6, 2), _epoch(1, 2, 0.5, 3), _epoch(2, 1, 0.1, 4)]
    by_run, merged = index_epochs(rows)
    assert by_run[1][1]["id"] == 2 and sorted(by_run[1]) == [1, 2] and list(by_run[2]) == [1]
    assert merged == {(1, 1): [1]}


def test_map_epoch():
    exp_id = ObjectId()
    row = _epoch(1, 3, 0.5, 12)
    row["learning_rate"] = None
    doc = map_epoch(row, exp_id, SOURCE, LegacyClock("UTC"), [9])
    assert doc["experiment_id"] == exp_id and doc["epoch"] == 3
    assert doc["metrics"] == {"train_loss": 1.0, "val_loss": 0.5, "duration_s": 61.0}
    assert doc["logged_at"] == dt.datetime(2025, 10, 21, 23, 40, tzinfo=dt.UTC)
    assert doc["legacy"]["merged_ids"] == [9] and doc["legacy"]["id"] == 12
    assert epoch_metrics({}) == {}


# --- model_checkpoints ---------------------------------------------------------------------------
def test_best_and_shared_checkpoints():
    rows = [
        {"checkpoint_id": 1, "run_id": 1, "val_loss": 0.5, "file_path": "/m/best.pth"},
        {"checkpoint_id": 2, "run_id": 1, "val_loss": 0.3, "file_path": "/m/best.pth"},
        {"checkpoint_id": 3, "run_id": 1, "val_loss": math.nan, "file_path": "/m/a.pth"},
        {"checkpoint_id": 4, "run_id": 2, "val_loss": 0.3, "file_path": "/m/best.pth"},
        {"checkpoint_id": 5, "run_id": 2, "val_loss": None, "file_path": None},
    ]
    assert best_checkpoint_row(rows[:3])["checkpoint_id"] == 2
    assert best_checkpoint_row([rows[1], rows[3]])["checkpoint_id"] == 2  # ties: lowest id
    assert best_checkpoint_row([rows[2], rows[4]]) is None
    assert shared_checkpoint_paths(rows) == {"/m/best.pth"}


def test_map_checkpoint_sizes_and_flags():
    exp_id = ObjectId()
    row = {
        "checkpoint_id": 8,
        "run_id": 1,
        "epoch": 4,
        "val_loss": 0.25,
        "file_path": "/home/u/run1.pth",
        "file_size_mb": 0.5,
        "timestamp": "2025-10-19T19:01:00",
        "is_best": b"\x01",
    }
    found = FileCheck("cd" * 32, "verified: computed from the file during migration", 123)
    doc = map_checkpoint(
        row, exp_id, is_best=False, file=found, source=SOURCE, clock=LegacyClock("UTC")
    )
    assert doc["size_bytes"] == int(0.5 * MB)  # the stored size wins over the file's
    assert doc["sha256"] == "cd" * 32 and doc["checksum_status"].startswith("verified")
    assert doc["is_best"] is False and doc["legacy"]["is_best_original"] is True
    assert doc["metrics"] == {"val_loss": 0.25} and doc["upload_status"] == "not requested"
    row.update(file_size_mb=None, val_loss=None, file_path=None)
    doc = map_checkpoint(
        row, exp_id, is_best=True, file=found, source=SOURCE, clock=LegacyClock("UTC")
    )
    assert doc["size_bytes"] == 123 and doc["metrics"] == {} and doc["path"] == ""
    assert doc["is_best"] is True


# --- subjects ------------------------------------------------------------------------------------
def test_map_subject():
    row = {
        "subject_id": "sub-NDARAA111",
        "age": 10.5,
        "sex": "F",
        "p_factor": math.nan,
        "release": "R1",
        "n_sessions": 2,
        "n_trials": None,
        "data_quality": 0.9,
        "notes": "noisy Cz",
    }
    subject_id, update = map_subject(row, SOURCE, NOW)
    assert subject_id == "NDARAA111"
    on_insert = update["$setOnInsert"]
    assert on_insert["age"] == 10.5 and on_insert["sessions_count"] == 2
    assert on_insert["scores.p_factor"] is None  # NaN is not a value
    assert "trials_count" not in on_insert and "annotations" not in on_insert
    assert on_insert["created_at"] == on_insert["updated_at"] == NOW
    assert update["$addToSet"] == {
        "releases": "R1",
        "annotations": {"text": "noisy Cz", "author": "sqlite migration", "at": None},
    }
    assert update["$set"]["legacy"]["id"] == "sub-NDARAA111"
    _, bare = map_subject({"subject_id": "NDARBB222"}, SOURCE, NOW)
    assert bare["$setOnInsert"]["annotations"] == [] and "$addToSet" not in bare
    with pytest.raises(ValueError, match="subject id"):
        map_subject({"subject_id": "not an id!"}, SOURCE, NOW)


# --- cache_files ---------------------------------------------------------------------------------
def test_map_cache_file():
    assert stored_checksum("AB" * 32) == "ab" * 32
    assert stored_checksum("md5:1234") is None and stored_checksum(None) is None
    row = {
        "cache_id": 3,
        "challenge": 2,
        "release": "R1",
        "file_path": "/cache/c2_R1.h5",
        "file_size_mb": 2.0,
        "n_windows": 10,
        "n_channels": 129,
        "n_times": 400,
        "created_at": "2025-10-19T10:00:00",
        "checksum": "AB" * 32,
    }
    check = FileCheck("ab" * 32, "unverifiable: file not found on this machine")
    doc = map_cache_file(row, file=check, source=SOURCE, clock=LegacyClock("UTC"))
    assert doc["size_bytes"] == 2 * MB and doc["samples"] == 400 and doc["windows"] == 10
    assert doc["sha256"] == "ab" * 32
    assert doc["checksum"] == {"value": "AB" * 32, "status": check.status}
    assert doc["locations"] == [{"host": None, "path": "/cache/c2_R1.h5"}]
    assert doc["registered_at"] == dt.datetime(2025, 10, 19, 10, tzinfo=dt.UTC)
