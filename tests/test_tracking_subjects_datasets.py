"""`subjects sync` from participants.tsv + feature summaries, `datasets register` of HDF5 files."""
# ruff: noqa: F811 - pytest fixtures imported from test_tracking_support are parameter names

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_tracking_support import db  # noqa: F401 - fixtures

from tracking.datasets import register_files
from tracking.errors import DatasetError, NotFoundError
from tracking.subjects import annotate_subject, normalize_subject_id, sync_subjects

HEADER = "participant_id\trelease_number\tsex\tage\tehq_total\tp_factor\tattention\tinternalizing\texternalizing\tsite\n"


def _tsv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def _features(
    features_dir: Path, snapshot: str, created: dt.datetime, good: float, challenge: int = 2
) -> None:
    folder = features_dir / "subject_features" / f"challenge{challenge}"
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "subject_id": ["NDARAA001", "NDARAA002"],
        "release": ["R1", "R1"],
        "challenge": np.array([challenge, challenge], np.int8),
        "snapshot_id": [snapshot, snapshot],
        "event_timestamp": [created, created],
        "created": [created, created],
        "source_file": ["challenge2_R1.h5"] * 2,
        "n_windows": [6, 4],
        "n_good_windows": [6, 2],
        "good_fraction": np.array([1.0, good], np.float32),
        "logabs_mean_alpha": np.array([1.5, 1.25], np.float32),
        "chan_rel_alpha": [[0.1, 0.2], [0.3, 0.4]],
    })  # fmt: skip
    frame.to_parquet(folder / f"{snapshot}.parquet")


def test_normalize_subject_id():
    assert normalize_subject_id("sub-NDARAB123") == "NDARAB123"
    assert normalize_subject_id(b"NDARAB123 ") == "NDARAB123"
    with pytest.raises(ValueError):
        normalize_subject_id("sub-")


def test_subjects_sync_upserts_and_is_idempotent(db, tmp_path):
    r1 = _tsv(tmp_path / "r1.tsv", [
        "sub-NDARAA001\tR1\tM\t10.25\t80.0\t0.5\t-0.1\t0.2\t0.3\tCBIC",
        "sub-NDARAA002\tR1\tF\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tRUBIC",
    ])  # fmt: skip
    r2 = _tsv(tmp_path / "r2.tsv", ["sub-NDARAA001\tR2\tM\t10.25\tn/a\t0.5\t-0.1\t0.2\t0.3\tCBIC"])
    features = tmp_path / "features"
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    _features(features, "snap_old", t0, good=0.1)
    _features(features, "snap_new", t0 + dt.timedelta(days=1), good=0.5)

    report = sync_subjects(db, [r1, r2], features)
    assert (report.subjects, report.inserted, report.participant_rows) == (2, 2, 3)
    a = db.subjects.find_one({"subject_id": "NDARAA001"})
    assert a["sex"] == "M" and a["age"] == 10.25 and a["ehq_total"] == 80.0  # n/a in R2 kept R1's
    assert a["scores"] == {
        "p_factor": 0.5,
        "attention": -0.1,
        "internalizing": 0.2,
        "externalizing": 0.3,
    }
    assert a["releases"] == ["R1", "R2"] and a["extra"] == {"site": "CBIC"}
    assert a["annotations"] == []
    b = db.subjects.find_one({"subject_id": "NDARAA002"})
    assert "age" not in b and "scores" not in b  # n/a is missing, not zero
    quality = b["quality"]["challenge2"]["R1"]
    assert quality["snapshot_id"] == "snap_new" and quality["good_fraction"] == pytest.approx(0.5)
    assert quality["n_windows"] == 4
    assert b["feature_summary"]["challenge2"]["R1"] == {"logabs_mean_alpha": 1.25}
    assert b["sessions"] == [{"challenge": 2, "release": "R1", "source_file": "challenge2_R1.h5"}]

    annotate_subject(db, "sub-NDARAA002", "flat channel E17", author="qc")
    again = sync_subjects(db, [r1, r2], features)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    assert db.subjects.count_documents({}) == 2
    assert (
        db.subjects.find_one({"subject_id": "NDARAA002"})["annotations"][0]["text"]
        == "flat channel E17"
    )


def test_subjects_sync_without_features_says_so(db, tmp_path):
    r1 = _tsv(tmp_path / "r1.tsv", ["sub-NDARAA001\tR1\tM\t10\t1\t0\t0\t0\t0\tX"])
    report = sync_subjects(db, [r1], tmp_path / "no-features")
    assert report.subjects == 1 and "no per-subject feature summaries" in report.messages[0]
    with pytest.raises(NotFoundError, match="nothing to sync"):
        sync_subjects(db, [], tmp_path / "no-features")


def test_bad_participants_file_names_file_line_and_column(db, tmp_path):
    bad = _tsv(tmp_path / "bad.tsv", ["sub-NDARAA001\tR1\tM\tten\tn/a\tn/a\tn/a\tn/a\tn/a\tX"])
    with pytest.raises(DatasetError, match=r"bad.tsv: line 2, column 'age': 'ten'"):
        sync_subjects(db, [bad])
    nocol = tmp_path / "nocol.tsv"
    nocol.write_text("id\tage\nA\t1\n")
    with pytest.raises(DatasetError, match="no 'participant_id' column"):
        sync_subjects(db, [nocol])
    assert db.subjects.count_documents({}) == 0


def _h5_challenge2(path: Path, n: int = 5) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.zeros((n, 129, 400), np.float32), compression="gzip")
        f.create_dataset(
            "subjects", data=np.array([b"NDARAA001", b"NDARAA002"] * 2 + [b"NDARAA003"])[:n]
        )
        f.attrs.update(
            sfreq=100.0, n_windows=n, n_channels=129, n_times=400, release="R1", task="RestingState"
        )
    return path


def _h5_challenge1(path: Path, n: int = 3) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("eeg", data=np.ones((n, 129, 200), np.float32), compression="gzip")
        f.create_dataset("subject_ids", data=np.array([b"NDARAA001"] * n))
        f.attrs.update(sfreq=100, release="R2", n_windows=n + 1, n_channels=129, n_timepoints=200)
    return path


def test_datasets_register_both_layouts(db, tmp_path):
    c2 = _h5_challenge2(tmp_path / "challenge2_R1.h5")
    c1 = _h5_challenge1(tmp_path / "challenge1_R2.h5")
    docs = register_files(db, [c2, c1])
    d2, d1 = docs
    assert (d2["challenge"], d2["release"], d2["windows"], d2["channels"], d2["samples"]) == (
        2,
        "R1",
        5,
        129,
        400,
    )
    assert d2["sfreq"] == 100.0 and d2["window_s"] == 4.0 and d2["n_subjects"] == 3
    assert (
        d2["sha256"] == hashlib.sha256(c2.read_bytes()).hexdigest() and d2["compression"] == "gzip"
    )
    assert (d1["challenge"], d1["release"], d1["samples"], d1["layout"]) == (
        1,
        "R2",
        200,
        "challenge1",
    )
    assert d1["warnings"] == ["attribute n_windows=4 but 'eeg' has 3"]
    register_files(db, [c2])  # again: same document
    copy = tmp_path / "copy.h5"
    copy.write_bytes(c2.read_bytes())
    register_files(db, [copy])  # same content elsewhere: one more location
    assert db.datasets.count_documents({}) == 2
    assert len(db.datasets.find_one({"sha256": d2["sha256"]})["locations"]) == 2


def test_datasets_register_rejects_bad_files_before_writing(db, tmp_path):
    good = _h5_challenge2(tmp_path / "good.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("windows", data=np.zeros((2, 3, 4)))
    with pytest.raises(DatasetError, match=r"other.h5: no 'data'.*found windows"):
        register_files(db, [good, other])
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="notes.h5: not a readable HDF5 file"):
        register_files(db, [text])
    assert db.datasets.count_documents({}) == 0
