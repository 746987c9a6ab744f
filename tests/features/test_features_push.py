"""`eegfs features push`: one new recording online within the call, offline from its push time,
and never twice (a later build adds nothing). Real Redis, real Feast, real snapshots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from features_testlib import write_h5, write_participants

from eegfs.cli import cli
from eegfs.errors import EXIT_ROWS_REJECTED
from featurestore.client import FeatureStoreClient
from featurestore.errors import FeatureStoreError
from featurestore.push import push_file
from pipelines import feature_tables as ft
from pipelines.build import BuildOptions, build_features

OLD = ["NDARAA000001", "NDARAA000002"]
NEW = "NDARNW000001"
SERVICE = "challenge2_inputs_v1"
OPTS = BuildOptions(progress=False)
COLUMNS = ["logabs_mean_alpha", "rel_mean_theta", "age", "n_windows"]


@pytest.fixture
def served_store(settings, tmp_path):
    """A store built from one file of OLD subjects, applied and materialized; a participants.tsv
    that already lists NEW, and a file of NEW alone."""
    old = write_h5(tmp_path / "in" / "old.h5", subjects=OLD, seed=1)
    tsv = write_participants(tmp_path / "in" / "participants.tsv", [*OLD, NEW])
    new = write_h5(tmp_path / "in" / "new.h5", subjects=[NEW], windows_per_subject=4, seed=5)
    build_features(settings.features_dir, [old.path], tsv, OPTS)
    with FeatureStoreClient(settings) as client:
        client.apply()
        client.materialize()
    return old.path, new.path, tsv


def _rows(features_dir, table: str) -> int:
    manifest = ft.Manifest.load(features_dir)
    return sum(
        pq.read_metadata(p).num_rows for p in manifest.files(table, 2) + manifest.files(table)
    )


def _at(ts) -> pd.DataFrame:
    return pd.DataFrame({"subject_id": [*OLD, NEW], "event_timestamp": [ts] * 3})


def test_push_serves_a_new_subject_within_the_call_and_a_build_adds_nothing(settings, served_store):
    old, new, tsv = served_store
    with FeatureStoreClient(settings) as client:  # warm cache (cache on) before the push
        before_online = client.get_online_features([NEW, *OLD], SERVICE)
        assert before_online.loc[0, ["logabs_mean_alpha", "n_windows"]].isna().all()
        served_before = client.served_snapshot_id()
        t_before = pd.Timestamp.now(tz="UTC")

        result = push_file(settings, new, participants_path=tsv, options=OPTS, client=client)

        online = client.get_online_features([NEW, *OLD], SERVICE)  # same client: cache dropped
    assert result.file.status == "built" and result.held_back == []
    assert result.snapshot_ids == [result.file.snapshot_id]  # participants already online
    assert result.rows_online == {"subject_bandpower_c2": 1}
    assert result.served_snapshot_id not in (None, served_before)
    assert online.loc[0, "n_windows"] == 4 and np.isfinite(online.loc[0, "logabs_mean_alpha"])
    assert online.loc[0, "age"] == before_online.loc[0, "age"]  # demographics were online
    pd.testing.assert_frame_equal(online.iloc[1:], before_online.iloc[1:])  # others untouched

    with FeatureStoreClient(settings) as fresh:
        past = fresh.get_historical_features(_at(t_before), SERVICE)
        now = fresh.get_historical_features(_at(pd.Timestamp.now(tz="UTC")), SERVICE)
        assert fresh.get_online_features([NEW], SERVICE).loc[0, "n_windows"] == 4
    assert past.loc[2, ["logabs_mean_alpha", "n_windows"]].isna().all()
    assert past.loc[:1, "logabs_mean_alpha"].notna().all()
    for col in ("logabs_mean_alpha", "rel_mean_theta", "n_windows"):
        assert now.loc[2, col] == pytest.approx(online.loc[0, col], rel=1e-6), col
    np.testing.assert_array_equal(now.loc[2, "chan_rel_alpha"], online.loc[0, "chan_rel_alpha"])

    n_rows = {t: _rows(settings.features_dir, t) for t in ft.PER_CHALLENGE_TABLES}
    manifest = ft.Manifest.load(settings.features_dir)
    entry = manifest.snapshots[result.file.snapshot_id]
    assert entry["input"]["path"] == str(new)
    again = build_features(settings.features_dir, [new], tsv, OPTS)
    assert [f.status for f in again.files] == ["skipped"]
    assert again.files[0].snapshot_id == result.file.snapshot_id  # the id a build gives it
    assert again.participants.status == "skipped"
    assert {t: _rows(settings.features_dir, t) for t in ft.PER_CHALLENGE_TABLES} == n_rows
    assert ft.Manifest.load(settings.features_dir).snapshots.keys() == manifest.snapshots.keys()

    repeat = push_file(settings, new, participants_path=tsv, options=OPTS)
    assert repeat.file.status == "skipped" and repeat.snapshot_ids == []
    assert repeat.served_snapshot_id == result.served_snapshot_id
    with FeatureStoreClient(settings) as client:
        client.materialize()  # nothing to load again: the pushed snapshot is in the marker
        assert client.served_snapshot_id() == manifest.store_snapshot_id()


def test_push_of_a_known_subject_replaces_its_online_values(settings, served_store):
    old, _, tsv = served_store
    rerecorded = write_h5(old.parent / "again.h5", subjects=OLD[:1], seed=9, scale=3.0)
    with FeatureStoreClient(settings) as client:
        before = client.get_online_features(OLD, SERVICE)
        result = push_file(settings, rerecorded.path, options=OPTS, client=client)
        after = client.get_online_features(OLD, SERVICE)
    assert result.build.participants is None and result.build.unlisted_subjects == []
    # 3x the amplitude: log10 power up by log10(9) (pushed right after the build: the push
    # waits for the next second so that Feast does not skip the write as not newer)
    diff = after.loc[0, "logabs_mean_alpha"] - before.loc[0, "logabs_mean_alpha"]
    assert diff == pytest.approx(np.log10(9.0), abs=0.3)
    assert after.loc[1, "logabs_mean_alpha"] == before.loc[1, "logabs_mean_alpha"]


def test_push_holds_back_rows_that_fail_a_gate_and_lists_unlisted_subjects(
    settings, served_store, cli_env
):
    old, _, tsv = served_store
    # values in microvolts, the file says volts: the total_power gate holds the subject back
    quiet = write_h5(
        old.parent / "uv.h5", subjects=["NDARQQ000001"], seed=3, scale=1e6, attrs={"units": "V"}
    )
    res = CliRunner().invoke(
        cli, ["features", "push", "--input", str(quiet.path), "--no-progress"], env=cli_env
    )
    assert res.exit_code == EXIT_ROWS_REJECTED, res.output
    assert "1 subject(s) held back" in res.output and "total_power" in res.output
    assert "1 subject(s) in no participants.tsv of the store" in res.output
    with FeatureStoreClient(settings) as client:
        row = client.get_online_features(["NDARQQ000001"], SERVICE)
    assert row.loc[0, COLUMNS].isna().all()


def test_push_cli_summary_and_errors(settings, served_store, cli_env, tmp_path):
    _, new, tsv = served_store
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["features", "push", "--input", str(new), "--participants", str(tsv), "--no-progress"],
        env=cli_env,
    )
    assert res.exit_code == 0, res.output
    assert "pushed online: 1 snapshot(s); rows: subject_bandpower_c2=1" in res.output
    got = runner.invoke(cli, ["features", "get", "--subject", NEW], env=cli_env)
    record = json.loads(got.output)
    assert record["features"][SERVICE]["n_windows"] == 4

    missing = runner.invoke(
        cli, ["features", "push", "--input", str(tmp_path / "nope.h5")], env=cli_env
    )
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert "nope.h5" in missing.output
    other = write_participants(tmp_path / "other.tsv", OLD)
    unknown = runner.invoke(
        cli,
        ["features", "push", "--input", str(new), "--participants", str(other)],
        env=cli_env,
    )
    assert unknown.exit_code == 1 and "missing from" in unknown.output


def test_push_needs_an_applied_registry(settings, tmp_path):
    new = write_h5(tmp_path / "new.h5", subjects=[NEW])
    with pytest.raises(FeatureStoreError, match="eegfs features apply"):
        push_file(settings, new.path, options=OPTS)
    assert not (settings.features_dir / ft.MANIFEST_NAME).exists()  # nothing was built
