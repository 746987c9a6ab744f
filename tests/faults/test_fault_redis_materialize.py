"""Fault injection: the online store's Redis SIGKILLed mid-materialize, then restarted.

Promise checked (docs/features.md, "Reliability of the online store"):

* A materialization that loses Redis half-way fails with an error that says so; the
  materialization marker (what ``eegfs features get`` reports as served) is written only after
  every view is loaded, so after the restart it never names the snapshots of the interrupted
  run: it is the previous marker, or none if Redis had not persisted it.
* Rerunning ``materialize`` after the restart loads what is missing: every subject is then served
  from the latest snapshot of each view (online values equal the point-in-time values as of now,
  inputs and labels) and the marker names exactly the committed snapshots.

The Redis is the test's own (``start_local_redis``), killed with SIGKILL while the second of the
three views that the new snapshots feed is being loaded (the first is already written).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from faults_testlib import sigkill

from featurestore import materialize as fm
from featurestore.client import FeatureStoreClient
from featurestore.errors import FeatureStoreError
from featurestore.marker import marker_key, parse_marker
from pipelines import feature_tables as ft
from pipelines.build import BuildOptions, build_features
from services.connections import redis_client
from services.settings import Settings
from tests.features.features_testlib import FEATURE_REPO, write_h5, write_participants

SUBJECTS = ["NDARAA000001", "NDARAA000002", "NDARAA000003"]
OPTS = BuildOptions(progress=False)
SERVICES = ("challenge2_inputs_v1", "challenge2_labels_v1")


def _settings(tmp_path, url: str) -> Settings:
    return Settings(
        redis_url=url,
        data_dir=tmp_path / "data",
        feature_repo=FEATURE_REPO,
        redis_source="configured",
    )


def _marker(url: str) -> dict | None:
    client = redis_client(url)
    try:
        return parse_marker(client.get(marker_key("eeg2025")))
    finally:
        client.close()


def _assert_served_from_latest(settings: Settings) -> None:
    """Online values of every subject equal the historical values as of now (latest rows)."""
    now = pd.DataFrame(
        {"subject_id": SUBJECTS, "event_timestamp": [pd.Timestamp.now(tz="UTC")] * len(SUBJECTS)}
    )
    with FeatureStoreClient(settings, cache_size=0) as client:
        for service in SERVICES:
            online = client.get_online_features(SUBJECTS, service)
            offline = client.get_historical_features(now, service)
            for col in client.feature_names(service):
                for a, b in zip(online[col], offline[col], strict=True):
                    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                        np.testing.assert_array_equal(a, b, err_msg=col)
                    elif isinstance(a, str) or isinstance(b, str):
                        assert a == b, col
                    else:
                        assert np.isclose(a, b, equal_nan=True, rtol=1e-6), (service, col, a, b)


def test_redis_killed_mid_materialize_then_restarted_serves_one_snapshot(
    tmp_path, start_local_redis, monkeypatch
):
    server = start_local_redis()
    settings = _settings(tmp_path, server.uri)
    c2 = tmp_path / "in" / "c2.h5"
    tsv = tmp_path / "in" / "participants.tsv"
    write_h5(c2, subjects=SUBJECTS, seed=1)
    write_participants(tsv, SUBJECTS, seed=1)
    build_features(settings.features_dir, [c2], tsv, OPTS)
    with FeatureStoreClient(settings) as client:
        client.apply()
        client.materialize()
    first = _marker(server.uri)
    assert first is not None

    # new versions of both inputs: three views (bandpower c2, demographics, labels) get new rows
    write_h5(c2, subjects=SUBJECTS, seed=2, scale=2.0)
    write_participants(tsv, SUBJECTS, seed=2)
    build_features(settings.features_dir, [c2], tsv, OPTS)
    manifest = ft.Manifest.load(settings.features_dir)
    new_ids = set(manifest.snapshots) - set(first["snapshot_ids"])
    assert len(new_ids) == 2

    loaded: list[str] = []
    original = fm._materialize_view

    def kill_on_second_view(store, s, view, start, end):
        loaded.append(view)
        if len(loaded) == 2:
            sigkill(server.pid)
        return original(store, s, view, start, end)

    monkeypatch.setattr(fm, "_materialize_view", kill_on_second_view)
    with (
        FeatureStoreClient(settings) as client,
        pytest.raises(FeatureStoreError, match="does not answer"),
    ):
        client.materialize()
    monkeypatch.undo()
    assert loaded == ["subject_bandpower_c2", "subject_demographics"]

    restarted = start_local_redis(port=server.port, workdir=server.data_dir)
    assert restarted.uri == server.uri
    after_restart = _marker(server.uri)
    # never the interrupted run's: the previous marker, or none if Redis had not saved it yet
    assert after_restart is None or after_restart == first
    assert after_restart is None or not new_ids & set(after_restart["snapshot_ids"])

    with FeatureStoreClient(settings) as client:
        client.materialize()
        served = client.served_snapshot_id()
    assert served == manifest.store_snapshot_id()
    assert set(_marker(server.uri)["snapshot_ids"]) == set(manifest.snapshots)
    _assert_served_from_latest(settings)
