"""Feature build: Parquet snapshots, skip/rebuild rules, bad inputs leave nothing, resumable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from features_testlib import write_h5, write_participants

from pipelines.build import BuildOptions, build_features
from pipelines.errors import InputDataError
from pipelines.hdf5_layout import default_channel_names

A = ["NDARAA000001", "NDARAA000002"]
B = ["NDARBB000001", "NDARBB000002", "NDARBB000003"]
OPTS = BuildOptions(progress=False, chunk_windows=4)


@pytest.fixture
def inputs(tmp_path):
    c2 = write_h5(tmp_path / "in" / "c2.h5", subjects=A, windows_per_subject=5, seed=1)
    c1 = write_h5(
        tmp_path / "in" / "c1.h5", layout="challenge1", subjects=B, windows_per_subject=4, seed=2
    )
    tsv = write_participants(tmp_path / "in" / "participants.tsv", A + B)
    return c2, c1, tsv


def _files(features_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(features_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(features_dir.rglob("*.parquet"))
    }


def _manifest(features_dir: Path) -> dict:
    return json.loads((features_dir / "manifest.json").read_text())


def test_build_writes_documented_tables(tmp_path, inputs):
    c2, c1, tsv = inputs
    fdir = tmp_path / "features"
    report = build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    assert [f.status for f in report.files] == ["built", "built"]
    assert report.participants.status == "built"
    assert "windows computed: 22" in report.summary()

    # the layout the tracking helper reads: every snapshot's subject rows in one read
    subj = pd.read_parquet(fdir / "subject_features")
    assert sorted(subj["subject_id"]) == sorted(A + B)
    for col in (
        "subject_id",
        "release",
        "snapshot_id",
        "created",
        "event_timestamp",
        "n_windows",
        "good_fraction",
        "logabs_mean_alpha",
        "rel_median_alpha",
        "chan_rel_alpha",
    ):
        assert col in subj.columns
    assert str(subj["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert set(subj["n_windows"]) == {4, 5} and (subj["good_fraction"] == 1.0).all()
    assert all(len(v) == 129 for v in subj["chan_rel_alpha"])

    win = pd.read_parquet(fdir / "window_features" / "challenge2")
    assert len(win) == 10 and win["window_index"].tolist() == list(range(10))
    assert win["abs_alpha"].iloc[0].dtype == np.float32 and len(win["abs_alpha"].iloc[0]) == 129
    meta = pq.read_schema(
        next((fdir / "window_features" / "challenge2").glob("*.parquet"))
    ).metadata
    assert json.loads(meta[b"eegfs.channel_names"]) == default_channel_names(129)

    labels = pd.read_parquet(fdir / "subject_labels")
    assert set(labels.columns) >= {"p_factor", "attention", "internalizing", "externalizing"}
    demo = pd.read_parquet(fdir / "subject_demographics").set_index("subject_id")
    assert np.isnan(demo.loc[A[1], "age"]) and demo.loc[A[0], "sex"] == "M"
    rt = pd.read_parquet(fdir / "subject_rt_labels")
    assert sorted(rt["subject_id"]) == sorted(B) and (rt["n_rt_windows"] == 4).all()
    wl = pd.read_parquet(fdir / "window_labels" / "challenge1")
    assert "response_time" in wl.columns and len(wl) == 12

    man = _manifest(fdir)
    assert {s["kind"] for s in man["snapshots"].values()} == {"hdf5", "participants"}
    assert man["channels"]["challenge2"] == default_channel_names(129)
    assert not list(fdir.rglob(".*.tmp"))


def test_reading_through_h5py_gives_the_same_tables(tmp_path, inputs):
    """direct_chunks=False (every chunk read by h5py) computes bit-identical features."""
    c2, c1, tsv = inputs
    times = ["event_timestamp", "created"]
    for table in ("window_features", "subject_features", "window_labels"):
        frames = []
        for direct in (True, False):
            fdir = tmp_path / f"direct-{direct}"
            opts = BuildOptions(progress=False, chunk_windows=4, direct_chunks=direct)
            if not fdir.exists():
                build_features(fdir, [c2.path, c1.path], tsv, opts)
            frame = pd.read_parquet(fdir / table).drop(columns=times)
            frames.append(frame.sort_values(["snapshot_id", "subject_id"]).reset_index(drop=True))
        pd.testing.assert_frame_equal(frames[0], frames[1])


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the flat Cz column is all NaN
def test_subject_aggregates_follow_their_definition(tmp_path, inputs):
    c2, _, tsv = inputs
    fdir = tmp_path / "features"
    build_features(fdir, [c2.path], tsv, OPTS)
    win = pd.read_parquet(fdir / "window_features")
    subj = pd.read_parquet(fdir / "subject_features").set_index("subject_id")
    for sid, g in win[win["good"]].groupby("subject_id"):
        logabs = np.stack(g["logabs_alpha"].to_list())  # (windows, channels)
        rel = np.stack(g["rel_alpha"].to_list())
        chan_log = np.nanmean(logabs, axis=0)
        row = subj.loc[sid]
        assert row["logabs_mean_alpha"] == pytest.approx(np.nanmean(chan_log), rel=1e-5)
        assert row["logabs_std_alpha"] == pytest.approx(np.nanstd(chan_log), rel=1e-4)
        np.testing.assert_allclose(row["chan_rel_alpha"], np.nanmean(rel, axis=0), rtol=1e-5)
        assert row["rel_median_alpha"] == pytest.approx(
            np.median(np.nanmean(rel, axis=1)), rel=1e-5
        )
        assert np.isnan(row["chan_rel_alpha"][-1])  # Cz: flat reference -> NaN relative power


def test_rerun_skips_unchanged_and_changed_input_adds_a_snapshot(tmp_path, inputs):
    c2, c1, tsv = inputs
    fdir = tmp_path / "features"
    build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    before = _files(fdir)
    again = build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    assert [f.status for f in again.files] == ["skipped", "skipped"]
    assert again.participants.status == "skipped" and _files(fdir) == before

    write_h5(c2.path, subjects=A, windows_per_subject=5, seed=99)  # new content, same name
    changed = build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    assert [f.status for f in changed.files] == ["built", "skipped"]
    after = _files(fdir)
    assert all(after[k] == v for k, v in before.items())  # old snapshots never rewritten
    assert len(after) == len(before) + 3  # window features, window labels, subject features
    subj = pd.read_parquet(fdir / "subject_features" / "challenge2")
    assert subj.groupby("subject_id")["snapshot_id"].nunique().eq(2).all()


def test_touched_but_unchanged_input_is_skipped_after_hashing(tmp_path, inputs):
    import os

    c2, _, tsv = inputs
    fdir = tmp_path / "features"
    build_features(fdir, [c2.path], tsv, OPTS)
    before = _files(fdir)
    st = c2.path.stat()
    os.utime(c2.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # new mtime, same bytes
    again = build_features(fdir, [c2.path], tsv, OPTS)
    assert again.files[0].status == "skipped" and _files(fdir) == before
    assert (
        _manifest(fdir)["hash_cache"][str(c2.path.resolve())]["mtime_ns"] == st.st_mtime_ns + 10**9
    )
    assert not list(fdir.rglob(".*.tmp"))


def test_force_recomputes_but_keeps_event_timestamp(tmp_path, inputs):
    c2, _, tsv = inputs
    fdir = tmp_path / "features"
    first = build_features(fdir, [c2.path], tsv, OPTS)
    ts = _manifest(fdir)["snapshots"][first.files[0].snapshot_id]["event_timestamp"]
    forced = build_features(fdir, [c2.path], tsv, BuildOptions(progress=False, force=True))
    assert (
        forced.files[0].status == "rebuilt"
        and forced.files[0].snapshot_id == first.files[0].snapshot_id
    )
    snap = _manifest(fdir)["snapshots"][first.files[0].snapshot_id]
    assert snap["event_timestamp"] == ts and snap["created"] > ts
    subj = pd.read_parquet(fdir / "subject_features")
    assert len(subj) == 2 and (subj["event_timestamp"].astype(str) == str(pd.Timestamp(ts))).all()


def test_unknown_subject_fails_before_anything_is_written(tmp_path, inputs):
    c2, c1, _ = inputs
    tsv = write_participants(tmp_path / "p.tsv", A)  # lacks B
    fdir = tmp_path / "features"
    with pytest.raises(InputDataError) as err:
        build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    msg = str(err.value)
    assert (
        "c1.h5" in msg and "subject_ids" in msg and "NDARBB000001" in msg and "participants" in msg
    )
    assert _files(fdir) == {} and not (fdir / "manifest.json").exists()


def test_bad_file_among_good_ones_leaves_no_output(tmp_path, inputs):
    c2, c1, tsv = inputs
    bad = write_h5(tmp_path / "in" / "bad.h5", subjects=A, drop=("subjects",))
    fdir = tmp_path / "features"
    with pytest.raises(InputDataError, match="bad.h5: missing dataset 'subjects'"):
        build_features(fdir, [c2.path, bad.path, c1.path], tsv, OPTS)
    assert _files(fdir) == {}


def test_corruption_found_while_reading_commits_nothing_for_that_file(tmp_path, inputs):
    import h5py

    c2, c1, tsv = inputs
    with h5py.File(c1.path, "r") as f:
        offset = f["eeg"].id.get_chunk_info(5).byte_offset
    good_bytes = c1.path.read_bytes()
    raw = bytearray(good_bytes)
    raw[offset : offset + 64] = b"\x00" * 64
    c1.path.write_bytes(bytes(raw))
    fdir = tmp_path / "features"
    with pytest.raises(InputDataError, match=r"c1.h5: dataset 'eeg': chunk at window 5"):
        build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    man = _manifest(fdir)
    assert [s["input"]["name"] for s in man["snapshots"].values() if s["kind"] == "hdf5"] == [
        "c2.h5"
    ]
    assert not (fdir / "window_features" / "challenge1").exists() or not list(
        (fdir / "window_features" / "challenge1").glob("*.parquet")
    )
    assert not list(fdir.rglob(".*.tmp"))
    c1.path.write_bytes(good_bytes)  # repaired: the rerun finishes the job
    rerun = build_features(fdir, [c2.path, c1.path], tsv, OPTS)
    assert [f.status for f in rerun.files] == ["skipped", "built"]


def test_nonfinite_windows_are_nan_with_flags(tmp_path):
    spec = write_h5(tmp_path / "nan.h5", subjects=A, windows_per_subject=4, seed=3)
    data = spec.data.copy()
    data[1, 7, 100] = np.nan
    data[6, :, :] = np.inf
    spec = write_h5(spec.path, subjects=A, windows_per_subject=4, data=data)
    tsv = write_participants(tmp_path / "p.tsv", A)
    fdir = tmp_path / "features"
    report = build_features(fdir, [spec.path], tsv, OPTS)
    assert report.files[0].n_nonfinite_windows == 2 and report.files[0].n_good_windows == 6
    win = pd.read_parquet(fdir / "window_features").set_index("window_index")
    assert win.loc[[1, 6], "nonfinite"].all() and not win.loc[[1, 6], "good"].any()
    assert np.isnan(win.loc[1, "abs_alpha"]).all() and np.isfinite(win.loc[2, "abs_alpha"]).all()
    subj = pd.read_parquet(fdir / "subject_features").set_index("subject_id")
    assert subj.loc[A[0], "good_fraction"] == 0.75 and np.isfinite(
        subj.loc[A[0], "logabs_mean_alpha"]
    )


def test_channel_order_is_never_mixed_silently(tmp_path):
    first = write_h5(
        tmp_path / "a.h5",
        subjects=A,
        n_channels=3,
        attrs={"ch_names": np.array([b"Fz", b"Cz", b"Pz"])},
    )
    second = write_h5(
        tmp_path / "b.h5",
        subjects=A,
        n_channels=3,
        seed=4,
        attrs={"ch_names": np.array([b"Pz", b"Cz", b"Fz"])},
    )
    tsv = write_participants(tmp_path / "p.tsv", A)
    fdir = tmp_path / "features"
    build_features(fdir, [first.path], tsv, OPTS)
    with pytest.raises(InputDataError, match="b.h5: channel order differs"):
        build_features(fdir, [second.path], tsv, OPTS)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("id\tage\nsub-NDARAA000001\t9\n", "no 'participant_id' column"),
        ("participant_id\tage\nsub-NDARAA000001\tnine\n", "line 2: column 'age' holds 'nine'"),
        (
            "participant_id\tage\nsub-NDARAA000001\t9\n\nsub-ndaraa000001\t10\n",
            "line 4: subject NDARAA000001 is listed more than once with different values",
        ),
        ("participant_id\tage\nsub-NDARAA000001\t9\ngarbage\n", "line 3: 1 tab-separated"),
    ],
)
def test_bad_participants_file(tmp_path, text, match):
    spec = write_h5(tmp_path / "a.h5", subjects=A)
    tsv = tmp_path / "participants.tsv"
    tsv.write_text(text)
    with pytest.raises(InputDataError, match=match):
        build_features(tmp_path / "features", [spec.path], tsv, OPTS)
