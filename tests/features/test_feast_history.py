"""Point-in-time frames: reproducibility after a rebuild, merge_asof/Feast references, cache drop,
and the plain Feast CLI on the committed feature_repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from features_testlib import FEATURE_REPO, write_h5, write_participants

from featurestore.client import FeatureStoreClient
from featurestore.shell_env import shell_environment
from pipelines.build import BuildOptions, build_features

A = ["NDARAA000001", "NDARAA000002", "NDARAA000003"]
B = ["NDARBB000001", "NDARBB000002"]
OPTS = BuildOptions(progress=False)


def _frame_bytes(df: pd.DataFrame) -> list[bytes]:
    """Exact content of a frame: raw bytes of every column (list cells included)."""
    out = []
    for col in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[col]):
            out.append(df[col].astype("int64").to_numpy().tobytes())
            continue
        values = df[col].to_numpy()
        if values.dtype == object:
            out.append(
                b"|".join(
                    np.asarray(v).tobytes() if not isinstance(v, str) else v.encode()
                    for v in values
                )
            )
        else:
            out.append(values.tobytes())
    return out


@pytest.fixture
def two_files(tmp_path):
    c2 = write_h5(tmp_path / "in" / "c2.h5", subjects=A, windows_per_subject=3, seed=1)
    c1 = write_h5(
        tmp_path / "in" / "c1.h5",
        layout="challenge1",
        subjects=A + B,
        windows_per_subject=2,
        seed=2,
    )
    tsv = write_participants(tmp_path / "in" / "participants.tsv", A + B)
    return c2, c1, tsv


def _entities(ids, ts) -> pd.DataFrame:
    return pd.DataFrame({"subject_id": ids, "event_timestamp": [ts] * len(ids)})


def test_frame_as_of_t1_is_reproducible_after_a_rebuild(settings, two_files):
    c2, c1, tsv = two_files
    build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    client = FeatureStoreClient(settings)
    client.apply()
    time.sleep(0.01)
    t1 = pd.Timestamp.now(tz="UTC")
    ents = _entities(A + B, t1)
    f1 = {
        s: client.get_historical_features(ents, s)
        for s in ("challenge2_inputs_v1", "challenge1_inputs_v1")
    }
    x1, _ = client.get_historical_matrix(ents, "challenge2_inputs_v1")
    time.sleep(0.01)

    write_h5(c2.path, subjects=A, windows_per_subject=3, seed=42, scale=3.0)  # one input changes
    report = build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    assert [f.status for f in report.files] == ["built", "skipped"]

    with FeatureStoreClient(settings) as fresh:  # a new process reading the same store
        for service, before in f1.items():
            again = fresh.get_historical_features(ents, service)
            assert _frame_bytes(again) == _frame_bytes(before)
        x1_again, _ = fresh.get_historical_matrix(ents, "challenge2_inputs_v1")
        assert x1_again.tobytes() == x1.tobytes()

        now = fresh.get_historical_features(
            _entities(A + B, pd.Timestamp.now(tz="UTC")), "challenge2_inputs_v1"
        )
        old = f1["challenge2_inputs_v1"]
        # scaled data: log power up by log10(9) in the changed file's subjects
        np.testing.assert_allclose(
            now["logabs_mean_alpha"][:3] - old["logabs_mean_alpha"][:3], np.log10(9.0), atol=0.3
        )
        assert (
            now["logabs_mean_alpha"][3:].isna().all() and old["logabs_mean_alpha"][3:].isna().all()
        )
        c1_now = fresh.get_historical_features(
            _entities(A + B, pd.Timestamp.now(tz="UTC")), "challenge1_inputs_v1"
        )
        assert _frame_bytes(c1_now.drop(columns="event_timestamp")) == _frame_bytes(
            f1["challenge1_inputs_v1"].drop(columns="event_timestamp")
        )
    client.close()


def _brute_force(entities: pd.DataFrame, source: pd.DataFrame, col: str) -> np.ndarray:
    """For each entity row, the value of the source row with the latest (event_timestamp,
    created) not after the entity time, for that subject: a loop, obviously correct."""
    out = np.full(len(entities), np.nan)
    for i, (sid, ts) in enumerate(
        zip(entities["subject_id"], entities["event_timestamp"], strict=True)
    ):
        rows = source[(source["subject_id"] == sid) & (source["event_timestamp"] <= ts)]
        if len(rows):
            out[i] = rows.sort_values(["event_timestamp", "created"]).iloc[-1][col]
    return out


def test_historical_matches_merge_asof_reference_with_duplicates_and_misses(settings, two_files):
    c2, c1, tsv = two_files
    build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    write_h5(
        c2.path, subjects=A[:2], windows_per_subject=3, seed=7
    )  # 2nd snapshot, one subject fewer
    build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    source = pd.read_parquet(settings.features_dir / "subject_features" / "challenge2")
    t_snap = sorted(source["event_timestamp"].unique())
    assert len(t_snap) == 2

    rng = np.random.default_rng(0)
    ids = rng.choice([*A, *B, "NDARNOBODY"], size=300)
    anchors = [
        t_snap[0] - pd.Timedelta("1h"),
        t_snap[0],
        t_snap[0] + pd.Timedelta("1us"),
        t_snap[1] - pd.Timedelta("1us"),
        t_snap[1],
        t_snap[1] + pd.Timedelta("1d"),
    ]
    ts = [anchors[i] for i in rng.integers(0, len(anchors), size=300)]
    ents = pd.DataFrame({"subject_id": ids, "event_timestamp": pd.to_datetime(ts, utc=True)})
    ents = pd.concat([ents, ents.iloc[:40]], ignore_index=True)  # repeated (subject, time) rows
    ents["subject_id"] = [f"sub-{s}" if i % 7 == 0 else s for i, s in enumerate(ents["subject_id"])]

    with FeatureStoreClient(settings) as client:
        client.apply()
        got = client.get_historical_features(ents, "challenge2_inputs_v1")
    assert len(got) == len(ents)
    canon = ents["subject_id"].str.removeprefix("sub-")
    assert got["subject_id"].tolist() == canon.tolist()

    # reference 1: pandas merge_asof on the Parquet table read independently
    left = pd.DataFrame(
        {
            "row": np.arange(len(ents)),
            "subject_id": canon,
            "event_timestamp": ents["event_timestamp"].astype("datetime64[us, UTC]"),
        }
    )
    right = source.sort_values(["event_timestamp", "created"])[
        ["subject_id", "event_timestamp", "rel_mean_alpha", "n_windows"]
    ]
    ref = pd.merge_asof(
        left.sort_values("event_timestamp"), right, on="event_timestamp", by="subject_id"
    ).sort_values("row")
    np.testing.assert_array_equal(
        got["rel_mean_alpha"].to_numpy(), ref["rel_mean_alpha"].to_numpy(np.float32)
    )
    np.testing.assert_array_equal(
        got["n_windows"].to_numpy(), ref["n_windows"].to_numpy(np.float64)
    )
    # reference 2: a plain loop
    np.testing.assert_array_equal(
        got["logabs_std_gamma"].to_numpy(),
        _brute_force(left, source, "logabs_std_gamma").astype(np.float32),
    )
    miss = got["rel_mean_alpha"].isna()
    assert miss.sum() > 0 and (~miss).sum() > 0
    assert got.loc[canon == "NDARNOBODY", "rel_mean_alpha"].isna().all()
    assert got.loc[ents["event_timestamp"] < t_snap[0], "rel_mean_alpha"].isna().all()


def test_same_values_as_feasts_own_offline_store(settings, two_files):
    """Where Feast's file store returns a row (no repeats, with a match), the values agree."""
    c2, c1, tsv = two_files
    build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    with FeatureStoreClient(settings) as client:
        client.apply()
        ents = _entities(A, pd.Timestamp.now(tz="UTC"))
        ours = client.get_historical_features(ents, "challenge2_inputs_v1")
        fs = client.store.get_feature_service("challenge2_inputs_v1")
        feast_df = client.store.get_historical_features(entity_df=ents, features=fs).to_df()
    feast_df = feast_df.set_index("subject_id").loc[A].reset_index()
    for col in ("rel_mean_alpha", "logabs_mean_beta", "good_fraction", "age", "ehq_total"):
        np.testing.assert_allclose(
            ours[col].to_numpy(float), feast_df[col].to_numpy(float), rtol=0, atol=0
        )
    for u, v in zip(ours["chan_rel_theta"], feast_df["chan_rel_theta"], strict=True):
        np.testing.assert_array_equal(u, np.asarray(v, np.float32))


def test_new_materialization_drops_every_clients_cache(settings, two_files):
    c2, c1, tsv = two_files
    build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    reader = FeatureStoreClient(settings)
    reader.apply()
    reader.materialize()
    first = reader.get_online_features(A, "challenge2_inputs_v1")
    reader.get_online_features(A, "challenge2_inputs_v1")
    info = reader.cache_info()
    assert info["hits"] == len(A) and info["size"] == len(A)
    old_marker = info["materialization"]

    write_h5(c2.path, subjects=A, windows_per_subject=3, seed=5, scale=2.0)
    build_features(settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    with FeatureStoreClient(settings) as other:  # another process materializes
        other.materialize()
        new_marker = other.served_snapshot_id()
    assert new_marker != old_marker
    second = reader.get_online_features(A, "challenge2_inputs_v1")
    assert reader.cache_info()["materialization"] == new_marker
    assert (second["logabs_mean_alpha"] - first["logabs_mean_alpha"]).abs().min() > 0.3
    reader.close()


def test_plain_feast_cli_apply_and_materialize_incremental(
    tmp_path, settings, two_files, start_local_redis
):
    """`cd feature_repo && feast apply && feast materialize-incremental` as Feast users do, on a
    Redis whose password holds characters a URL must escape (EEGFS_FEAST_REDIS carries it)."""
    c2, c1, tsv = two_files
    root = tmp_path / "checkout"
    shutil.copytree(
        FEATURE_REPO, root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__", "data")
    )
    server = start_local_redis(password="p@ss w/rd:%=x")
    cli_settings = settings.with_overrides(data_dir=root / "data", redis_url=server.uri)
    build_features(cli_settings.features_dir, [c2.path, c1.path], tsv, OPTS)
    env = {**os.environ, **shell_environment(cli_settings)}
    feast = str(Path(sys.executable).parent / "feast")
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 5))
    for args in (["apply"], ["materialize-incremental", now]):
        run = subprocess.run(
            [feast, *args],
            cwd=root / "feature_repo",
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    assert (cli_settings.features_dir / "feast" / "registry.db").exists()
    with FeatureStoreClient(cli_settings) as client:  # reads what the Feast CLI wrote to Redis
        df = client.store.get_online_features(
            features=client.store.get_feature_service("challenge1_inputs_v1"),
            entity_rows=[{"subject_id": s} for s in A + B],
        ).to_df()
    assert df["rel_mean_alpha"].notna().all() and df["n_windows"].notna().all()
