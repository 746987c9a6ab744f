"""`subjects sync` from parsed participants rows + feature summaries, `datasets register` of HDF5
files (read by the CLI with the feature build's reader, recorded by tracking)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from eegfs.cli import cli
from pipelines.participants import read_participants
from tracking.datasets import record_datasets
from tracking.errors import DatasetError, NotFoundError
from tracking.subjects import annotate_subject, sync_subjects

HEADER = "participant_id\trelease_number\tsex\tage\tehq_total\tp_factor\tattention\tinternalizing\texternalizing\tsite\n"


def _tsv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def _features(
    features_dir: Path, snapshot: str, created: dt.datetime, good: float, challenge: int = 2
) -> None:
    folder = features_dir / "subject_features" / f"challenge{challenge}"
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
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
        }
    )
    frame.to_parquet(folder / f"{snapshot}.parquet")


def _parsed(*paths: Path) -> dict:
    """What `eegfs subjects sync` passes to tracking: resolved path -> parsed rows."""
    return {p.resolve(): read_participants(p, extra_columns=True) for p in paths}


def _run(env, *args):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_subjects_sync_upserts_and_is_idempotent(db, tmp_path):
    r1 = _tsv(
        tmp_path / "r1.tsv",
        [
            "sub-NDARAA001\tR1\tM\t10.25\t80.0\t0.5\t-0.1\t0.2\t0.3\tCBIC",
            "sub-NDARAA002\tR1\tF\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tRUBIC",
        ],
    )
    r2 = _tsv(tmp_path / "r2.tsv", ["sub-NDARAA001\tR2\tM\t10.25\tn/a\t0.5\t-0.1\t0.2\t0.3\tCBIC"])
    features = tmp_path / "features"
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    _features(features, "snap_old", t0, good=0.1)
    _features(features, "snap_new", t0 + dt.timedelta(days=1), good=0.5)

    report = sync_subjects(db, _parsed(r1, r2), features)
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
    assert a["sources"]["participants"] == sorted([str(r1.resolve()), str(r2.resolve())])
    assert a["annotations"] == []
    b = db.subjects.find_one({"subject_id": "NDARAA002"})
    assert "age" not in b and "scores" not in b  # n/a is missing, not zero
    quality = b["quality"]["challenge2"]["R1"]
    assert quality["snapshot_id"] == "snap_new" and quality["good_fraction"] == pytest.approx(0.5)
    assert quality["n_windows"] == 4
    assert b["feature_summary"]["challenge2"]["R1"] == {"logabs_mean_alpha": 1.25}
    assert b["sessions"] == [{"challenge": 2, "release": "R1", "source_file": "challenge2_R1.h5"}]

    annotate_subject(db, "sub-NDARAA002", "flat channel E17", author="qc")
    again = sync_subjects(db, _parsed(r1, r2), features)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    assert db.subjects.count_documents({}) == 2
    assert (
        db.subjects.find_one({"subject_id": "NDARAA002"})["annotations"][0]["text"]
        == "flat channel E17"
    )


def test_subjects_sync_without_features_says_so(db, tmp_path):
    r1 = _tsv(tmp_path / "r1.tsv", ["sub-NDARAA001\tR1\tM\t10\t1\t0\t0\t0\t0\tX"])
    report = sync_subjects(db, _parsed(r1), tmp_path / "no-features")
    assert report.subjects == 1 and "no per-subject feature summaries" in report.messages[0]
    with pytest.raises(NotFoundError, match="nothing to sync"):
        sync_subjects(db, {}, tmp_path / "no-features")


def test_subjects_sync_takes_plain_dict_rows(db):
    rows = [
        {
            "participant_id": "sub-NDARAA001",
            "release_number": "R4",
            "sex": "F",
            "age": 7.5,
            "p_factor": float("nan"),
            "handedness": None,
            "site": "SI",
        },
        {"subject_id": "NDARAA002", "release": "R4", "age": None},
    ]
    report = sync_subjects(db, {"inline": rows})
    assert (report.inserted, report.participant_rows) == (2, 2)
    a = db.subjects.find_one({"subject_id": "NDARAA001"})
    assert a["age"] == 7.5 and a["releases"] == ["R4"] and "scores" not in a
    assert a["extra"] == {"site": "SI"} and a["sources"]["participants"] == ["inline"]
    with pytest.raises(DatasetError, match=r"inline: participants row 0: subject id 'NDAR_3'"):
        sync_subjects(db, {"inline": [{"subject_id": "NDAR_3"}]})
    with pytest.raises(DatasetError, match="row 0 has no subject_id"):
        sync_subjects(db, {"inline": [{"age": 3}]})
    assert db.subjects.count_documents({}) == 2


def test_cli_subjects_sync_parses_like_the_feature_build(db, cli_env, tmp_path):
    good = _tsv(tmp_path / "r1.tsv", ["sub-NDARAA001\tR1\tM\tNA\tn/a\t0.5\t0\t0\t0\tX"])
    for _ in range(2):  # idempotent
        result = _run(cli_env, "subjects", "sync", "--participants", str(good))
        assert result.exit_code == 0, result.output
    assert "0 new, 0 updated, 1 unchanged (1 participants row(s) from 1 file(s)" in result.output
    doc = db.subjects.find_one({"subject_id": "NDARAA001"})
    assert "age" not in doc and doc["scores"]["p_factor"] == 0.5  # NA is missing
    bad = _tsv(tmp_path / "bad.tsv", ["sub-NDARAA009\tR1\tM\tten\tn/a\tn/a\tn/a\tn/a\tn/a\tX"])
    dup = _tsv(
        tmp_path / "dup.tsv",
        ["sub-NDARAA008\tR1\tM\t1\t1\t0\t0\t0\t0\tX", "sub-ndaraa008\tR2\tM\t1\t1\t0\t0\t0\t0\tX"],
    )
    nocol = tmp_path / "nocol.tsv"
    nocol.write_text("id\tage\nA\t1\n")
    for path, message in (
        (bad, "bad.tsv: 1 bad row(s): line 2: column 'age' holds 'ten'"),
        (dup, "line 3: subject NDARAA008 is listed more than once with different values"),
        (nocol, "nocol.tsv: no 'participant_id' column"),
    ):
        result = _run(
            cli_env, "subjects", "sync", "--participants", str(good), "--participants", str(path)
        )
        assert result.exit_code == 1 and message in result.output, result.output
    assert db.subjects.count_documents({}) == 1
    # --lenient: the bad rows are skipped with a warning listing them, the good ones are synced
    mixed = _tsv(
        tmp_path / "mixed.tsv",
        ["sub-NDARAA007\tR1\tF\t1\t1\t0\t0\t0\t0\tX", "garbage", "x\ty\tz"],
    )
    result = CliRunner().invoke(
        cli, ["subjects", "sync", "--participants", str(mixed), "--lenient"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    assert "mixed.tsv: skipped 2 bad row(s) (--lenient): line 3: 1 tab-separated" in result.output
    assert "line 4: 3 tab-separated field(s)" in result.output
    assert sorted(d["subject_id"] for d in db.subjects.find()) == ["NDARAA001", "NDARAA007"]


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


def _h5_challenge1(path: Path, n: int = 3, n_windows_attr: int | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("eeg", data=np.ones((n, 129, 200), np.float32), compression="gzip")
        f.create_dataset("subject_ids", data=np.array([b"sub-NDARAA001"] * n))
        f.attrs.update(
            sfreq=100, release="R2", n_windows=n_windows_attr or n, n_channels=129, n_timepoints=200
        )
    return path


def test_datasets_register_both_layouts(db, cli_env, tmp_path):
    c2 = _h5_challenge2(tmp_path / "challenge2_R1.h5")
    c1 = _h5_challenge1(tmp_path / "challenge1_R2.h5")
    result = _run(cli_env, "datasets", "register", str(c2), str(c1))
    assert result.exit_code == 0, result.output
    assert "5x129x400" in result.output and "3x129x200" in result.output
    d2 = db.datasets.find_one({"path": str(c2.resolve())})
    d1 = db.datasets.find_one({"path": str(c1.resolve())})
    assert (d2["challenge"], d2["release"], d2["windows"], d2["channels"], d2["samples"]) == (
        2,
        "R1",
        5,
        129,
        400,
    )
    assert d2["sfreq"] == 100.0 and d2["window_s"] == 4.0 and d2["n_subjects"] == 3
    assert d2["sha256"] == hashlib.sha256(c2.read_bytes()).hexdigest()
    assert (d2["compression"], d2["dtype"], d2["layout"], d2["dataset"]) == (
        "gzip",
        "float32",
        "challenge2",
        "data",
    )
    assert d2["task"] == "RestingState" and d2["attrs"]["n_times"] == 400
    assert d2["size_bytes"] == c2.stat().st_size and d2["warnings"] == []
    assert d2["locations"][0]["path"] == str(c2.resolve()) and "registered_at" in d2
    assert (d1["challenge"], d1["release"], d1["samples"], d1["layout"], d1["n_subjects"]) == (
        1,
        "R2",
        200,
        "challenge1",
        1,
    )
    for _ in range(2):  # again: same documents
        assert _run(cli_env, "datasets", "register", str(c2), str(c1)).exit_code == 0
    assert db.datasets.count_documents({}) == 2
    copy = tmp_path / "copy.h5"
    copy.write_bytes(c2.read_bytes())
    assert _run(cli_env, "datasets", "register", str(copy)).exit_code == 0
    assert db.datasets.count_documents({}) == 2  # same content elsewhere: one more location
    assert len(db.datasets.find_one({"sha256": d2["sha256"]})["locations"]) == 2
    listed = _run(cli_env, "datasets", "list").output
    assert "R1" in listed and d2["sha256"][:16] in listed


def test_datasets_register_accepts_what_features_build_accepts(db, cli_env, tmp_path):
    custom = tmp_path / "custom.h5"
    with h5py.File(custom, "w") as f:
        f.create_dataset("X", data=np.zeros((4, 3, 50), np.float64))
        f.create_dataset("who", data=np.array([b"NDARAA001", b"NDARAA002"] * 2))
    plain = _run(cli_env, "datasets", "register", str(custom))
    assert plain.exit_code == 1 and "custom.h5: no windows dataset" in plain.output
    no_rate = _run(
        cli_env, "datasets", "register", str(custom), "--map", "data=X", "--map", "subjects=who"
    )
    assert no_rate.exit_code == 1 and "no 'sfreq' root attribute" in no_rate.output
    mapped = _run(
        cli_env,
        "datasets",
        "register",
        str(custom),
        "--map",
        "data=X",
        "--map",
        "subjects=who",
        "--map",
        "challenge=1",
        "--sfreq",
        "50",
    )
    assert mapped.exit_code == 0, mapped.output
    doc = db.datasets.find_one({})
    assert (doc["challenge"], doc["dataset"], doc["sfreq"], doc["window_s"], doc["release"]) == (
        1,
        "X",
        50.0,
        1.0,
        None,
    )
    bad_map = _run(cli_env, "datasets", "register", str(custom), "--map", "data")
    assert bad_map.exit_code == 2 and "--map expects KEY=DATASET" in bad_map.output


def test_datasets_register_rejects_bad_files_before_writing(db, cli_env, tmp_path):
    good = _h5_challenge2(tmp_path / "good.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("windows", data=np.zeros((2, 3, 4)))
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    inconsistent = _h5_challenge1(tmp_path / "c1.h5", n=3, n_windows_attr=4)
    bad_id = _h5_challenge2(tmp_path / "badid.h5")
    with h5py.File(bad_id, "a") as f:
        f["subjects"][0] = b"NDAR_01"
    for path, message in (
        (other, r"other.h5: no windows dataset: expected 'data'"),
        (text, "notes.h5: not a readable HDF5 file"),
        (inconsistent, "c1.h5: attribute n_windows=4 disagrees"),
        (bad_id, "badid.h5: subject id 'NDAR_01' holds characters"),
    ):
        result = _run(cli_env, "datasets", "register", str(good), str(path))
        assert result.exit_code == 1 and message in result.output, result.output
    assert db.datasets.count_documents({}) == 0


def test_record_datasets_checks_every_record_first(db):
    ok = {
        "path": "/data/a.h5",
        "sha256": "ab" * 32,
        "challenge": 2,
        "windows": 1,
        "channels": 2,
        "samples": 3,
        "attrs": {"release": np.bytes_(b"R1"), "n": np.int64(1)},
    }
    with pytest.raises(DatasetError, match=r"/data/b.h5: dataset metadata lacks sha256"):
        record_datasets(db, [ok, {**ok, "path": "/data/b.h5", "sha256": None}])
    with pytest.raises(DatasetError, match="no files given"):
        record_datasets(db, [])
    assert db.datasets.count_documents({}) == 0
    (doc,) = record_datasets(db, [ok])
    assert doc["attrs"] == {"release": "R1", "n": 1} and doc["warnings"] == []
