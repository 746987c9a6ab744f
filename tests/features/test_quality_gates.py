"""Data-quality gates: bad files never replace good features, online or offline.

The gates themselves are pure functions (pipelines.quality); the build holds failing rows back
(pipelines.promotion), records them in the manifest, evaluates them again on the next build and
promotes them only with a new snapshot, so earlier point-in-time frames never change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from features_testlib import write_h5, write_participants

from pipelines import feature_tables as ft
from pipelines import quality as q
from pipelines.build import BuildOptions, build_features
from pipelines.pit import point_in_time_join
from pipelines.promotion import held_back_subjects

A = ["NDARAA000001", "NDARAA000002"]
OPTS = BuildOptions(progress=False, chunk_windows=4)
ACCEPT = BuildOptions(progress=False, chunk_windows=4, accept_failing=True)


# --- the pure gates -----------------------------------------------------------------------------
def _frame(**columns) -> pd.DataFrame:
    base = {
        "subject_id": ["S1", "S2", "S3"],
        "good_fraction": np.array([1.0, 0.4, 0.5], np.float32),
        q.TOTAL_POWER_COLUMN: [50.0, 50.0, 50.0],
        "logabs_mean_alpha": np.array([1.0, 1.0, 1.0], np.float32),
        "n_windows": [10, 10, 10],
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_subject_gates_and_their_defaults():
    assert q.QualityThresholds() == q.QualityThresholds(0.5, 0.01, 1e5)
    failures = q.check_subjects(_frame())
    assert list(failures) == ["S2"] and [f.gate for f in failures["S2"]] == [q.GOOD_FRACTION]
    assert "0.40 of the windows are good, at least 0.5 needed" in str(failures["S2"][0])

    power = [1e13, 0.001, math.nan]
    failures = q.check_subjects(_frame(**{q.TOTAL_POWER_COLUMN: power, "good_fraction": [1.0] * 3}))
    assert {s: [f.gate for f in fs] for s, fs in failures.items()} == {
        "S1": [q.TOTAL_POWER],
        "S2": [q.TOTAL_POWER],
        "S3": [q.TOTAL_POWER],
    }
    assert "1e+13 uV^2 outside [0.01, 1e+05] (microvolts stored as volts?)" in str(
        failures["S1"][0]
    )
    assert "no finite window with a non-flat channel" in str(failures["S3"][0])

    nan_row = _frame(logabs_mean_alpha=np.array([1.0, np.inf, np.nan], np.float32))
    failures = q.check_subjects(nan_row, q.QualityThresholds(min_good_fraction=0.0))
    assert sorted(failures) == ["S2", "S3"]
    assert str(failures["S3"][0]) == "finite: 1 feature(s) not finite: logabs_mean_alpha"
    with pytest.raises(ValueError, match="lacks column"):
        q.check_subjects(pd.DataFrame({"subject_id": ["S1"]}))
    with pytest.raises(ValueError, match="min_total_power_uv2"):
        q.QualityThresholds(min_total_power_uv2=10, max_total_power_uv2=1)


def test_file_gates_compare_with_the_store_and_decide_blocks_only_channel_count():
    ref = q.StoreReference("challenge2_x", 129, 100.0)
    assert q.check_file(129, 100.0, ref) == [] and q.check_file(64, 250.0, None) == []
    fails = q.check_file(64, 250.0, ref)
    assert [f.gate for f in fails] == [q.CHANNEL_COUNT, q.SFREQ]
    assert (
        "64 channels, the store's earlier snapshots of this challenge have 129" in fails[0].detail
    )

    subj = {"S2": [q.GateFailure(q.GOOD_FRACTION, "low")]}
    d = q.decide(["S1", "S2"], subj)
    assert d.promoted == ["S1"] and d.held_back == ["S2"] and d.accepted == []
    d = q.decide(["S1", "S2"], subj, accept_failing=True)
    assert d.promoted == ["S1", "S2"] and d.accepted == ["S2"]
    d = q.decide(["S1", "S2"], subj, [fails[1]], accept_failing=True)  # sfreq: acceptable
    assert d.promoted == ["S1", "S2"] and [f.gate for f in d.failures["S2"]] == [
        q.GOOD_FRACTION,
        q.SFREQ,
    ]
    d = q.decide(["S1", "S2"], subj, [fails[0]], accept_failing=True)  # channel count: never
    assert d.promoted == [] and d.held_back == ["S1", "S2"]


def test_power_statistic_ignores_flat_channels_and_unmeasurable_windows():
    total = np.array(
        [[4.0, 0.0, 6.0, 5.0], [1.0, 1.0, 1.0, 1.0], [np.nan] * 4, [10.0, 1.0, 3.0, 2.0]],
        np.float32,
    )
    flat = np.array([[False, True, False, False], [True] * 4, [False] * 4, [False] * 4])
    per_window = q.window_total_power(total, flat)
    np.testing.assert_array_equal(per_window, np.array([5.0, np.nan, np.nan, 2.5], np.float32))
    rng = np.random.default_rng(0)  # the sort-based median equals numpy's on random rows
    big, mask = rng.random((50, 129)), rng.random((50, 129)) < 0.3
    expected = [np.median(big[i][~mask[i]]) for i in range(50)]
    np.testing.assert_allclose(q.window_total_power(big, mask), expected, rtol=1e-6)
    codes = np.array([0, 0, 1, 0])
    np.testing.assert_array_equal(q.subject_total_power(per_window, codes, 2), [3.75, np.nan])


# --- real files ---------------------------------------------------------------------------------
def _manifest(fdir: Path) -> dict:
    return json.loads((fdir / "manifest.json").read_text())


def _latest(fdir: Path, challenge: int = 2) -> pd.DataFrame:
    """What historical retrieval "as of now" serves: each subject's newest served row."""
    rows = pd.read_parquet(fdir / "subject_features" / f"challenge{challenge}")
    rows = rows.sort_values(["event_timestamp", "created"])
    return rows.drop_duplicates("subject_id", keep="last").set_index("subject_id")


@pytest.fixture
def store(tmp_path):
    """A store whose challenge 2 features of A come from a good file."""
    good = write_h5(tmp_path / "in" / "good.h5", subjects=A, windows_per_subject=5, seed=1)
    tsv = write_participants(tmp_path / "in" / "participants.tsv", A)
    fdir = tmp_path / "features"
    first = build_features(fdir, [good.path], tsv, OPTS)
    assert first.n_held_back == 0
    return fdir, tsv, first.files[0].snapshot_id, good


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "in" / f"{kind}.h5"
    if kind == "flat":  # every window flat (a disconnected amplifier)
        data = np.zeros((10, 129, 400), np.float32)
        return write_h5(path, subjects=A, windows_per_subject=5, data=data).path
    if kind == "nan":  # subject 1: 4 of 5 windows hold a NaN; subject 2: 1 of 5
        spec = write_h5(path, subjects=A, windows_per_subject=5, seed=5)
        data = spec.data.copy()
        data[[0, 1, 2, 3], 7, 100] = np.nan
        data[6, :, :] = np.inf
        return write_h5(path, subjects=A, windows_per_subject=5, data=data).path
    if kind == "uv_as_volts":  # values in microvolts, the file says volts
        return write_h5(
            path, subjects=A, windows_per_subject=5, seed=6, scale=1e6, attrs={"units": "V"}
        ).path
    assert kind == "channels"  # 64 channels where the store has 129
    return write_h5(path, subjects=A, windows_per_subject=5, seed=7, n_channels=64).path


@pytest.mark.parametrize(
    ("kind", "held", "gates"),
    [
        ("flat", A, {q.FINITE, q.GOOD_FRACTION, q.TOTAL_POWER}),
        ("nan", A[:1], {q.GOOD_FRACTION}),
        ("uv_as_volts", A, {q.TOTAL_POWER}),
        ("channels", A, {q.CHANNEL_COUNT}),
    ],
)
def test_bad_file_leaves_the_promoted_values_the_latest(tmp_path, store, kind, held, gates):
    fdir, tsv, good_sid, _ = store
    before = _latest(fdir)
    bad = _bad_file(tmp_path, kind)
    report = build_features(fdir, [bad], tsv, OPTS)
    sid = report.files[0].snapshot_id
    assert report.files[0].status == "built" and report.n_held_back == len(held)
    assert report.files[0].quality.held_back == held

    after = _latest(fdir)
    for s in held:  # still the good file's values: nothing of the bad file is served
        assert after.loc[s, "snapshot_id"] == good_sid
        pd.testing.assert_series_equal(after.loc[s], before.loc[s])
    for s in set(A) - set(held):  # the subject that passed is served from the new file
        assert after.loc[s, "snapshot_id"] == sid

    entry = _manifest(fdir)["snapshots"][sid]
    section = entry["quality"]
    assert section["n_held_back"] == len(held) and section["thresholds"]["min_good_fraction"] == 0.5
    for s in held:
        assert {r["gate"] for r in section["rejected"][s]["reasons"]} == gates
        assert section["rejected"][s]["promoted"] is False
    quarantined = pd.read_parquet(fdir / entry["files"]["quarantine/subject_features"])
    assert sorted(quarantined["subject_id"]) == sorted(held)
    if kind == "channels":
        assert _manifest(fdir)["channels"]["challenge2"][-1] == "Cz"  # the store's order stays


def test_partly_nan_file_report_and_reasons(tmp_path, store):
    fdir, tsv, _, _ = store
    build_features(fdir, [_bad_file(tmp_path, "nan")], tsv, OPTS)
    report = json.loads((fdir / "quality_report.json").read_text())
    (item,) = report["inputs"]
    verdict = item["quality"]["subjects"][A[0]]
    assert report["n_held_back"] == 1 and verdict["promoted"] is False
    assert verdict["good_fraction"] == pytest.approx(0.2)
    assert verdict["reasons"] == [
        "good_fraction: 0.20 of the windows are good, at least 0.5 needed "
        "(flat or non-finite windows)"
    ]
    assert 1 < verdict["total_power_uv2"] < 1e4  # the finite windows are fine EEG


def test_held_back_rows_are_evaluated_again_and_promoted_only_by_a_new_snapshot(tmp_path, store):
    fdir, tsv, good_sid, _ = store
    bad = _bad_file(tmp_path, "uv_as_volts")
    sid = build_features(fdir, [bad], tsv, OPTS).files[0].snapshot_id
    t_mid = pd.Timestamp.now(tz="UTC")
    files_before = sorted(p.name for p in fdir.rglob("*.parquet"))

    again = build_features(fdir, [bad], tsv, OPTS)  # no --force: evaluated again, still held
    assert again.files[0].status == "skipped" and again.files[0].quality.reevaluated
    assert (
        again.n_held_back == 2 and sorted(p.name for p in fdir.rglob("*.parquet")) == files_before
    )

    accepted = build_features(fdir, [bad], tsv, ACCEPT)
    outcome = accepted.files[0].quality
    assert accepted.n_held_back == 0 and outcome.accepted == A
    pid = outcome.promotion_snapshot_id
    man = _manifest(fdir)
    promo = man["snapshots"][pid]
    assert promo["kind"] == "promotion" and promo["source_snapshot_id"] == sid
    assert promo["accept_failing"] is True and sorted(promo["accepted"]) == A
    assert promo["event_timestamp"] > man["snapshots"][sid]["event_timestamp"]
    assert held_back_subjects(ft.Manifest.load(fdir), sid) == []
    latest = _latest(fdir)
    assert set(latest["snapshot_id"]) == {pid}
    promoted_file = fdir / promo["files"]["subject_features"]
    assert pq.read_schema(promoted_file).metadata[b"eegfs.snapshot_id"] == pid.encode()
    assert (latest["event_timestamp"] == pd.Timestamp(promo["event_timestamp"])).all()

    # a frame as of a time before the promotion is what it was: the good file's values
    rows = pd.read_parquet(fdir / "subject_features" / "challenge2")
    entities = pd.DataFrame({"subject_id": A, "event_timestamp": [t_mid] * 2})
    frame = point_in_time_join(entities, rows, ["snapshot_id", "logabs_mean_alpha"])
    assert frame["snapshot_id"].tolist() == [good_sid, good_sid]

    final = build_features(fdir, [bad], tsv, OPTS)  # promoted rows are never promoted twice
    assert final.n_held_back == 0 and final.files[0].quality is None
    assert len(_manifest(fdir)["snapshots"]) == len(man["snapshots"])


def test_accept_failing_promotes_at_build_time_and_records_it(tmp_path, store):
    fdir, tsv, _, _ = store
    report = build_features(fdir, [_bad_file(tmp_path, "flat")], tsv, ACCEPT)
    sid = report.files[0].snapshot_id
    assert report.n_held_back == 0 and report.files[0].quality.accepted == A
    section = _manifest(fdir)["snapshots"][sid]["quality"]
    assert section["accept_failing"] is True and section["n_promoted"] == 2
    assert all(v["promoted"] for v in section["rejected"].values())
    assert set(_latest(fdir)["snapshot_id"]) == {sid}
    assert "quarantine/subject_features" not in _manifest(fdir)["snapshots"][sid]["files"]


def test_channel_count_change_is_never_promoted(tmp_path, store):
    fdir, tsv, good_sid, _ = store
    bad = _bad_file(tmp_path, "channels")
    report = build_features(fdir, [bad], tsv, ACCEPT)
    assert report.n_held_back == 2
    again = build_features(fdir, [bad], tsv, ACCEPT)
    assert again.n_held_back == 2 and set(_latest(fdir)["snapshot_id"]) == {good_sid}


def test_force_rebuild_keeps_what_was_held_back(tmp_path, store):
    fdir, tsv, good_sid, _ = store
    bad = _bad_file(tmp_path, "nan")
    sid = build_features(fdir, [bad], tsv, OPTS).files[0].snapshot_id
    forced = build_features(
        fdir, [bad], tsv, BuildOptions(progress=False, force=True, accept_failing=True)
    )
    assert forced.files[0].status == "rebuilt"
    # the rewritten snapshot still does not serve A[0] (that would change earlier frames)...
    rows = pd.read_parquet(fdir / "subject_features" / "challenge2")
    assert rows.loc[rows["snapshot_id"] == sid, "subject_id"].tolist() == [A[1]]
    # ...and the accepted row arrives with a new snapshot instead
    pid = forced.files[0].quality.promotion_snapshot_id
    assert pid and _latest(fdir).loc[A[0], "snapshot_id"] == pid


def test_sfreq_change_is_rejected_and_can_be_accepted(tmp_path, store):
    fdir, tsv, good_sid, _ = store
    other = write_h5(
        tmp_path / "in" / "rate.h5",
        subjects=A,
        windows_per_subject=5,
        seed=8,
        attrs={"sfreq": 125.0},
    )
    report = build_features(fdir, [other.path], tsv, OPTS)
    assert report.n_held_back == 2
    assert report.files[0].quality.file_failures == [
        f"sfreq: 125 Hz, the store's earlier snapshots of this challenge have 100 Hz ({good_sid})"
    ]
    assert build_features(fdir, [other.path], tsv, ACCEPT).n_held_back == 0


def test_demo_data_passes_every_gate(tmp_path, small_demo):
    fdir = tmp_path / "features"
    report = build_features(
        fdir, small_demo.files, small_demo.participants, BuildOptions(progress=False)
    )
    assert report.n_held_back == 0 and all(o.subjects == {} for o in report.quality)
    for entry in _manifest(fdir)["snapshots"].values():
        if entry["kind"] == "hdf5":
            assert entry["quality"]["rejected"] == {} and entry["quality"]["file_failures"] == []


def test_missing_report_and_damaged_quarantine_are_clear_errors(tmp_path, store):
    from pipelines.errors import FeatureTableError
    from pipelines.quality_report import dataset_quality, load_report

    fdir, tsv, _, good = store
    with pytest.raises(FeatureTableError, match="no build report; run `eegfs features build`"):
        load_report(tmp_path / "empty")
    (fdir / "quality_report.json").write_text("{half")
    with pytest.raises(FeatureTableError, match="unreadable build report"):
        load_report(fdir)
    assert dataset_quality(tmp_path / "empty", "0" * 64) is None
    assert dataset_quality(fdir, "0" * 64) is None
    assert (
        dataset_quality(fdir, _manifest(fdir)["hash_cache"][str(good.path)]["sha256"])[
            "n_held_back"
        ]
        == 0
    )

    bad = _bad_file(tmp_path, "flat")
    sid = build_features(fdir, [bad], tsv, OPTS).files[0].snapshot_id
    quarantined = fdir / _manifest(fdir)["snapshots"][sid]["files"]["quarantine/subject_features"]
    quarantined.write_bytes(b"PAR1 damaged")
    with pytest.raises(FeatureTableError, match="held-back rows of snapshot .* are unreadable"):
        build_features(fdir, [bad], tsv, ACCEPT)
