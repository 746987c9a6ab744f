"""The feature store client on the demo data: one applied + materialized store for the module."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from features_testlib import FEATURE_REPO, assert_same_frames, module_settings

from featurestore import matrices
from featurestore.client import FeatureStoreClient
from featurestore.commands import online_features_record
from featurestore.errors import FeatureStoreError
from featurestore.labels import (
    INPUT_SERVICES,
    LABEL_FEATURES,
    LABEL_ROLE,
    LABEL_SERVICES,
    ROLE_TAG,
    check_label_exclusion,
    label_feature_names,
)
from featurestore.repo import batch_sources, check_feature_repo, load_repo_objects
from featurestore.shell_env import feast_connection_string
from pipelines import feature_tables as ft
from pipelines.build import BuildOptions, build_features
from pipelines.participants import read_participants

ALL_SERVICES = [*INPUT_SERVICES.values(), *LABEL_SERVICES.values()]


@pytest.fixture(scope="module")
def demo_store(small_demo, private_redis, tmp_path_factory):
    settings = module_settings(tmp_path_factory.mktemp("store") / "data", private_redis)
    build_features(
        settings.features_dir,
        small_demo.files,
        small_demo.participants,
        BuildOptions(progress=False),
    )
    client = FeatureStoreClient(settings)
    client.apply()
    client.materialize()
    yield settings, client, small_demo
    client.close()


def _all_subjects(demo) -> list[str]:
    return [s for r in sorted(demo.subjects) for s in demo.subjects[r]]


def test_every_demo_subject_has_online_input_features(demo_store):
    settings, client, demo = demo_store
    ids = _all_subjects(demo)
    people = read_participants(demo.participants).set_index("subject_id")
    for service in INPUT_SERVICES.values():
        df = client.get_online_features(ids, service)
        assert df["subject_id"].tolist() == ids
        assert (df["n_windows"] > 0).all() and (df["good_fraction"] == 1.0).all()
        for col in [c for c in df.columns if c.startswith(("logabs_", "rel_", "spectral"))]:
            assert np.isfinite(df[col]).all(), (service, col)
        assert all(isinstance(v, np.ndarray) and v.shape == (129,) for v in df["chan_rel_alpha"])
        np.testing.assert_array_equal(
            df["age"].isna().to_numpy(), people.loc[ids, "age"].isna().to_numpy()
        )
        assert set(df["sex"].dropna()) <= {"M", "F"}
    records = online_features_record(settings, ids[:2])
    assert records[0]["features"]["challenge2_inputs_v1"]["rel_mean_alpha"] is not None


def test_online_and_offline_read_the_same_values_and_missing_values(demo_store):
    _, client, demo = demo_store
    ids = [*_all_subjects(demo), "NDARNOTTHERE"]
    now = pd.Timestamp.now(tz="UTC")
    for service in ALL_SERVICES:
        online = client.get_online_features(ids, service)
        offline = client.get_historical_features(
            pd.DataFrame({"subject_id": ids, "event_timestamp": [now] * len(ids)}), service
        ).drop(columns="event_timestamp")
        assert_same_frames(online, offline)
        assert not any(v is None for v in online.to_numpy().ravel())
        assert online.iloc[-1, 1:].isna().all()


def _assert_equals_feast(ours: pd.DataFrame, theirs: dict, info) -> int:
    """Our frame equals Feast's ``to_dict()`` under the client's conventions; returns how many
    values were missing."""
    missing = 0
    for _, feat, kind in info.features:
        assert ours[feat].dtype == {"f32": np.float32, "f64": np.float64}.get(kind, object), feat
        for u, v in zip(ours[feat], theirs[feat], strict=True):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                assert isinstance(u, float) and np.isnan(u), (feat, u)
                missing += 1
            elif kind == "list":
                assert u.dtype == np.float32, feat
                np.testing.assert_array_equal(u, np.asarray(v, dtype=np.float32), err_msg=feat)
            elif kind == "f32":
                assert u == np.float32(v), (feat, u, v)
            elif kind == "f64":
                assert u == float(v), (feat, u, v)
            else:
                assert u == v and isinstance(u, str), (feat, u, v)
    return missing


def test_online_reads_equal_feasts_own_get_online_features(demo_store):
    """Every demo subject, unknown ids and repeats, every service, cache off and on (a second
    read comes from the cache): the same values as FeatureStore.get_online_features."""
    settings, client, demo = demo_store
    ids = [*_all_subjects(demo), "NDARNOTTHERE", _all_subjects(demo)[0], "NDARALSONOT"]
    missing = 0
    for cache_size in (0, 4096):
        with FeatureStoreClient(settings, cache_size=cache_size) as fresh:
            for service in ALL_SERVICES:
                theirs = client.store.get_online_features(
                    features=client.store.get_feature_service(service),
                    entity_rows=[{"subject_id": s} for s in ids],
                ).to_dict()
                assert theirs["subject_id"] == ids
                info = fresh.service_info(service)
                for _ in range(2):
                    ours = fresh.get_online_features(ids, service)
                    assert ours["subject_id"].tolist() == ids
                    missing += _assert_equals_feast(ours, theirs, info)
            assert fresh.cache_info()["hits"] == (
                len(set(ids)) * len(ALL_SERVICES) if cache_size else 0
            )
    # unknown subjects, n/a in participants.tsv, subjects without response times
    assert missing > 4 * 2 * 2 * 2


def test_duplicates_prefixes_unknown_ids_keep_order(demo_store):
    _, client, demo = demo_store
    a, b = demo.subjects["R1"][:2]
    df = client.get_online_features([b, f"sub-{a}", "NDARUNKNOWN", b], "challenge2_inputs_v1")
    assert df["subject_id"].tolist() == [b, a, "NDARUNKNOWN", b]
    assert_same_frames(df.iloc[[0]].reset_index(drop=True), df.iloc[[3]].reset_index(drop=True))
    assert df.iloc[2, 1:].isna().all() and not df.iloc[0, 1:4].isna().any()


def test_input_services_never_contain_labels(demo_store):
    _, client, _ = demo_store
    for service in INPUT_SERVICES.values():
        names = client.feature_names(service)
        assert names and not set(names) & LABEL_FEATURES
        assert not any(
            label in col for col in client.matrix_columns(service) for label in LABEL_FEATURES
        )
        info = client.service_info(service)
        assert all(info.views[v].tags.get("role") != "label" for v, _, _ in info.features)
    assert {"p_factor", "externalizing"} <= set(client.feature_names(LABEL_SERVICES[2]))
    assert "rt_mean" in client.feature_names(LABEL_SERVICES[1])
    # the guard that apply and doctor run rejects a service that mixes in a label view
    from feast import FeatureService

    objs = load_repo_objects(FEATURE_REPO)
    labels_fv = next(v for v in objs.feature_views if v.name == "subject_labels")
    bad = FeatureService(name=INPUT_SERVICES[2], features=[labels_fv])
    with pytest.raises(FeatureStoreError, match="label"):
        check_label_exclusion([bad], objs.feature_views)


def test_label_names_agree_with_the_repo_and_label_views_are_caught_by_field():
    from datetime import timedelta

    from feast import FeatureService, FeatureView, Field
    from feast.types import Float64

    objs = load_repo_objects(FEATURE_REPO)
    label_views = [v for v in objs.feature_views if v.tags.get(ROLE_TAG) == LABEL_ROLE]
    assert {v.name for v in label_views} == {"subject_labels", "subject_rt_labels"}
    repo_labels = {f.name for v in label_views for f in v.features}
    # every label field of the repo is in the list training checks its columns against, and the
    # list only adds the per-window response time (window_labels, not a Feast view)
    assert repo_labels <= LABEL_FEATURES and LABEL_FEATURES - repo_labels == {"response_time"}
    assert label_feature_names(objs.feature_views) == LABEL_FEATURES

    # a new label view is a label by its tag alone: its fields are refused under any input view
    entity = objs.entities[0]
    source = next(s for s in objs.sources if s.name == "subject_labels_source")
    new_labels = FeatureView(
        name="cbcl_labels",
        entities=[entity],
        ttl=timedelta(days=1),
        source=source,
        schema=[Field(name="cbcl_total", dtype=Float64)],
        tags={ROLE_TAG: LABEL_ROLE},
    )
    leaky = FeatureView(
        name="leaky_inputs",
        entities=[entity],
        ttl=timedelta(days=1),
        source=source,
        schema=[Field(name="cbcl_total", dtype=Float64)],
        tags={ROLE_TAG: "input"},
    )
    views = [*objs.feature_views, new_labels, leaky]
    assert "cbcl_total" in label_feature_names(views) and "cbcl_total" not in LABEL_FEATURES
    bad = FeatureService(name=INPUT_SERVICES[1], features=[leaky])
    with pytest.raises(
        FeatureStoreError, match=r"challenge1_inputs_v1.*label feature\(s\) \['cbcl_total'\]"
    ):
        check_label_exclusion([bad], views)
    check_label_exclusion([bad], [*objs.feature_views, leaky])  # without the label view: an input


def test_both_challenges_views_and_services_come_from_one_definition():
    objs = load_repo_objects(FEATURE_REPO)
    views = {v.name: v for v in objs.feature_views}
    c1, c2 = views["subject_bandpower_c1"], views["subject_bandpower_c2"]
    assert [(f.name, f.dtype) for f in c1.features] == [(f.name, f.dtype) for f in c2.features]
    assert (c1.tags, c2.tags) == (
        {"role": "input", "challenge": "1"},
        {"role": "input", "challenge": "2"},
    )
    assert c1.batch_source.tags["eegfs_table"] == "subject_features/challenge1"
    assert c2.batch_source.tags["eegfs_table"] == "subject_features/challenge2"
    services = {s.name: s for s in objs.feature_services}
    for k, view in ((1, c1), (2, c2)):
        projections = services[INPUT_SERVICES[k]].feature_view_projections
        assert [p.name for p in projections] == [view.name, "subject_demographics"]


def test_matrices_have_fixed_documented_columns(demo_store):
    _, client, demo = demo_store
    ids = [*demo.subjects["R2"], "NDARUNKNOWN"]
    X, cols = client.get_online_matrix(ids, "challenge2_inputs_v1")
    assert X.dtype == np.float32 and X.shape == (len(ids), len(cols))
    assert cols == client.matrix_columns("challenge2_inputs_v1")
    assert cols[:3] == ["n_windows", "n_good_windows", "good_fraction"]
    assert "chan_rel_alpha[E1]" in cols and "chan_rel_alpha[Cz]" in cols and "sex_code" in cols
    assert set(np.unique(X[:-1, cols.index("sex_code")])) <= {0.0, 1.0}
    assert np.isnan(X[-1]).all()
    ent = pd.DataFrame({"subject_id": ids, "event_timestamp": pd.Timestamp.now(tz="UTC")})
    Xh, cols_h = client.get_historical_matrix(ent, "challenge2_inputs_v1")
    assert cols_h == cols
    np.testing.assert_array_equal(X, Xh)


def test_online_cache_hits_and_can_be_disabled(demo_store):
    settings, client, demo = demo_store
    ids = demo.subjects["R1"]
    client.get_online_features(ids, "challenge1_inputs_v1")
    before = client.cache_info()
    client.get_online_features(ids, "challenge1_inputs_v1")
    after = client.cache_info()
    assert after["hits"] - before["hits"] == len(ids) and after["misses"] == before["misses"]
    assert after["materialization"] == client.served_snapshot_id()
    with FeatureStoreClient(settings, cache_size=0) as cold:
        cold.get_online_features(ids, "challenge1_inputs_v1")
        cold.get_online_features(ids, "challenge1_inputs_v1")
        assert cold.cache_info()["hits"] == 0 and cold.cache_info()["size"] == 0


def test_served_snapshot_is_the_manifest_set(demo_store):
    settings, client, _ = demo_store
    served = client.served_snapshot_id()
    assert served and served == ft.Manifest.load(settings.features_dir).store_snapshot_id()


def test_feature_store_yaml_takes_redis_from_the_environment(monkeypatch, redis_url):
    from feast.repo_config import load_repo_config

    raw = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    assert not raw["registry"]["path"].startswith("/")
    assert raw["online_store"]["connection_string"] == "${EEGFS_FEAST_REDIS}"
    monkeypatch.setenv("EEGFS_FEAST_REDIS", feast_connection_string(redis_url))
    cfg = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    assert cfg.online_store.connection_string == feast_connection_string(redis_url)
    for src in batch_sources(load_repo_objects(FEATURE_REPO).sources):
        assert not src.path.startswith("/") and src.path.startswith("../data/features/")


def test_check_feature_repo(tmp_path, settings):
    assert "4 services" in check_feature_repo(settings)
    broken = tmp_path / "repo"
    broken.mkdir()
    (broken / "feature_store.yaml").write_text((FEATURE_REPO / "feature_store.yaml").read_text())
    text = (
        (FEATURE_REPO / "eeg_features.py")
        .read_text()
        .replace(
            "_inputs_service(2, subject_bandpower_c2_fv)",
            "_inputs_service(2, subject_labels_fv)",
        )
    )
    assert text != (FEATURE_REPO / "eeg_features.py").read_text()
    (broken / "eeg_features.py").write_text(text)
    with pytest.raises(FeatureStoreError, match="challenge2_inputs_v1.*label"):
        check_feature_repo(settings.with_overrides(feature_repo=broken))
    with pytest.raises(FeatureStoreError, match="not found"):
        check_feature_repo(settings.with_overrides(feature_repo=tmp_path / "nowhere"))


def test_online_matrix_equals_the_dataframe_conversion_and_tracks_the_manifest(demo_store):
    settings, client, demo = demo_store
    ids = [*demo.subjects["R1"], demo.subjects["R1"][0], "NDARUNKNOWN"]
    for service in INPUT_SERVICES.values():
        for _ in range(2):  # cold, then from the cache and the cached matrix plan
            X, cols = client.get_online_matrix(ids, service)
            ref = matrices.frame_matrix(
                matrices.build_plan(
                    client.service_info(service), ft.Manifest.load(settings.features_dir)
                ),
                client.get_online_features(ids, service),
            )
            assert cols == client.matrix_columns(service)
            np.testing.assert_array_equal(X, ref)
    # the cached plan follows manifest.json: another channel list changes the columns
    path = settings.features_dir / ft.MANIFEST_NAME
    original = path.read_bytes()
    manifest = ft.Manifest.load(settings.features_dir)
    manifest.channels["challenge2"] = [f"X{c}" for c in manifest.channels["challenge2"]]
    try:
        manifest.save()
        assert "chan_rel_alpha[XE1]" in client.matrix_columns(INPUT_SERVICES[2])
    finally:
        tmp = path.with_name(".restore.tmp")
        tmp.write_bytes(original)
        tmp.replace(path)
    assert "chan_rel_alpha[E1]" in client.matrix_columns(INPUT_SERVICES[2])


def test_fill_matrix_spreads_lists_around_missing_rows_and_checks_widths():
    plan = [
        ("n_windows", ("num", "n_windows", 0)),
        ("power[E1]", ("list", "power", 0)),
        ("power[E2]", ("list", "power", 1)),
        ("power[E3]", ("list", "power", 2)),
        ("sex_code", ("cat", "sex", 0)),
    ]
    values = {
        "n_windows": np.array([3.0, np.nan, 5.0], np.float32),
        "power": [np.array([1, 2, 3], np.float32), np.nan, np.array([4, 5, 6], np.float32)],
        "sex": ["F", None, "m"],
    }
    out = matrices.fill_matrix(plan, 3, lambda feat, _encoding: values[feat])
    expected = np.array(
        [[3, 1, 2, 3, 0], [np.nan] * 5, [5, 4, 5, 6, 1]],
        np.float32,
    )
    np.testing.assert_array_equal(out, expected)
    values["power"][2] = np.array([1, 2], np.float32)
    with pytest.raises(FeatureStoreError, match="'power' holds 2 values, expected 3 channels"):
        matrices.fill_matrix(plan, 3, lambda feat, _encoding: values[feat])
