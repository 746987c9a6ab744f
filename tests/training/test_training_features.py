"""Subject features in training batches: alignment, no labels, missing-value policy, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from torch.utils.data import DataLoader

from featurestore.client import FeatureStoreClient
from featurestore.labels import INPUT_SERVICES, LABEL_FEATURES, LABEL_SERVICES
from pipelines.participants import read_participants
from services.local import free_port
from training.data import EpochSampler, WindowDataset, worker_init_fn
from training.errors import FeatureError
from training.features import (
    BatchCollate,
    FeatureScaler,
    OnlineFeatureSource,
    base_feature_name,
    check_no_labels,
    select_columns,
    setup_features,
)
from training.index import build_index
from training.loader import WindowLoader
from training.splits import make_split


def _setup(settings, env, mode: str, **kw):
    index = build_index(env.c2_files)
    split = make_split(index, seed=0)
    setup = setup_features(
        settings,
        mode=mode,
        challenge=2,
        train_subjects=split.train_subjects,
        all_subjects=[*split.train_subjects, *split.val_subjects],
        **kw,
    )
    return index, split, setup


def _expected_rows(settings, subjects, columns):
    with FeatureStoreClient(settings, cache_size=0) as client:
        matrix, names = client.get_online_matrix(subjects, INPUT_SERVICES[2])
    return matrix[:, [names.index(c) for c in columns]]


@pytest.mark.parametrize(
    ("workers", "loader_cls"), [(0, DataLoader), (2, DataLoader), (2, WindowLoader)]
)
def test_online_features_line_up_with_the_batch_subjects(
    train_settings, feature_env, workers, loader_cls
):
    index, split, setup = _setup(train_settings, feature_env, "online")
    assert setup.record["snapshot_id"].startswith("fs_")
    collate = BatchCollate(setup.source, setup.scaler)
    ds = WindowDataset(index, np.concatenate([split.train, split.val]), crop_samples=200)
    loader = loader_cls(
        ds,
        batch_size=7,
        sampler=EpochSampler(len(ds), shuffle=True, seed=1),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn,
    )
    d = len(setup.record["columns"])
    seen = 0
    hits = 0
    for batch in loader:
        feats = batch["features"].numpy()
        assert feats.shape == (len(batch["subjects"]), 2 * d)
        expected = _expected_rows(train_settings, batch["subjects"], setup.record["columns"])
        values, mask = setup.scaler.transform(expected)
        np.testing.assert_allclose(feats[:, :d], values, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(feats[:, d:], mask)
        assert batch["lookup"]["subjects"] == len(set(batch["subjects"]))
        hits = batch["lookup"]["stats"].get("hits", 0)
        seen += len(batch["subjects"])
    assert seen == len(ds)
    assert hits > 0, "later batches of a worker find their subjects in the client's cache"


def test_historical_frame_matches_the_store_and_is_hashed(train_settings, feature_env):
    index, split, setup = _setup(train_settings, feature_env, "historical")
    rec = setup.record
    assert rec["mode"] == "historical" and rec["snapshot_id"] == f"hist_{rec['frame_sha256'][:16]}"
    assert rec["snapshot_ids"], "the frame is as of a time after the build"
    subjects = list(split.val_subjects)
    np.testing.assert_allclose(
        setup.source.lookup(subjects),
        _expected_rows(train_settings, subjects, rec["columns"]),
        rtol=1e-6,
        equal_nan=True,
    )
    again = _setup(
        train_settings, feature_env, "historical", as_of=datetime.fromisoformat(rec["as_of"])
    )[2]
    assert again.record["frame_sha256"] == rec["frame_sha256"]


def test_historical_before_any_snapshot_has_no_features(train_settings, feature_env):
    with pytest.raises(FeatureError, match="none of the"):
        _setup(
            train_settings,
            feature_env,
            "historical",
            as_of=datetime.now(UTC) - timedelta(days=3650),
        )


def test_no_label_reaches_the_model_inputs(train_settings, feature_env):
    for feature_set in ("summary", "all"):
        index, split, setup = _setup(train_settings, feature_env, "online", feature_set=feature_set)
        columns = setup.record["columns"]
        assert not {base_feature_name(c) for c in columns} & LABEL_FEATURES
    assert len(columns) > 100  # "all" includes the per-channel columns
    # The values themselves: no input column reproduces a label of the subjects.
    people = read_participants(feature_env.demo.participants).set_index("subject_id")
    subjects = sorted(set(index.subjects.tolist()))
    batch = BatchCollate(setup.source, setup.scaler)(
        [(np.zeros((2, 2), np.float32), 0.0, s, 0) for s in subjects]
    )
    d = len(columns)
    raw = setup.source.lookup(subjects)
    assert np.array_equal(batch["features"].numpy()[:, d:], (~np.isnan(raw)).astype(np.float32))
    for label in ("p_factor", "attention", "internalizing", "externalizing"):
        target = people.loc[subjects, label].to_numpy(dtype=float)
        ok = np.isfinite(target)
        for j in range(d):
            col = raw[ok, j]
            if np.isfinite(col).all() and np.std(col) > 0:
                r = np.corrcoef(col, target[ok])[0, 1]
                assert not np.allclose(col, target[ok], atol=1e-3), (label, columns[j])
                assert abs(r) < 0.999, (label, columns[j], r)
    for service in LABEL_SERVICES.values():
        with pytest.raises(FeatureError, match="not an input service"):
            check_no_labels(["rel_mean_alpha"], service)
    with pytest.raises(FeatureError, match="externalizing"):
        check_no_labels(["rel_mean_alpha", "externalizing"], INPUT_SERVICES[2])


def test_unknown_subject_is_imputed_with_a_zero_mask_or_fails_by_name(train_settings, feature_env):
    index, split, setup = _setup(train_settings, feature_env, "online")
    known = split.train_subjects[0]
    samples = [(np.zeros((2, 2), np.float32), 0.0, s, 0) for s in (known, "NDARZZ999999", known)]
    batch = BatchCollate(setup.source, setup.scaler, policy="impute")(samples)
    d = len(setup.record["columns"])
    feats = batch["features"].numpy()
    assert (feats[1] == 0).all(), "unknown subject: mean-imputed values and an all-zero mask"
    assert feats[0, d:].sum() > 0 and np.array_equal(feats[0], feats[2])
    assert batch["lookup"]["missing_subjects"] == 1
    with pytest.raises(FeatureError, match="NDARZZ999999"):
        BatchCollate(setup.source, setup.scaler, policy="fail")(samples)


def test_a_failed_lookup_is_imputed_or_fails(train_settings, feature_env):
    index, split, setup = _setup(train_settings, feature_env, "online")
    dead = train_settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    source = OnlineFeatureSource(
        dead, setup.source.service, setup.source.all_columns, setup.source.column_idx
    )
    samples = [(np.zeros((2, 2), np.float32), 0.0, s, 0) for s in split.train_subjects[:3]]
    batch = BatchCollate(source, setup.scaler, policy="impute")(samples)
    assert batch["lookup"]["failed"] == 1 and (batch["features"].numpy() == 0).all()
    with pytest.raises(FeatureError, match="lookup"):
        BatchCollate(source, setup.scaler, policy="fail")(samples)


def test_scaler_uses_present_values_only():
    m = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0], [np.nan, np.nan, 5.0]], np.float32)
    scaler = FeatureScaler.fit(m)
    np.testing.assert_allclose(scaler.mean, [2.0, 0.0, 5.0])
    np.testing.assert_allclose(scaler.std, [1.0, 1.0, 1.0])
    values, mask = scaler.transform(np.array([[4.0, np.nan, 5.0]], np.float32))
    np.testing.assert_allclose(values, [[2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(mask, [[1.0, 0.0, 1.0]])
    assert FeatureScaler.from_dict(scaler.to_dict()).mean.tolist() == scaler.mean.tolist()


def test_column_selection():
    cols = ["rel_mean_alpha", "chan_rel_alpha[E1]", "chan_rel_alpha[Cz]", "sex_code"]
    assert select_columns(cols, "summary") == [0, 3]
    assert select_columns(cols, "all") == [0, 1, 2, 3]
    assert base_feature_name("chan_rel_alpha[E1]") == "chan_rel_alpha"
    assert base_feature_name("sex_code") == "sex"
