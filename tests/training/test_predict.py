"""``eegfs predict``: a registered model predicts a file with the inputs it was trained with.

Real servers: the module's materialized feature store (its own redis-server), a MongoDB
database of this module. One model is trained once (demo R1, validation release R2), registered
and aliased; the tests predict with it through the CLI.
"""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from click.testing import CliRunner

from eegfs.cli import cli
from featurestore.client import FeatureStoreClient
from services.settings import Settings
from tracking.database import open_database
from tracking.registry import ModelRegistry
from tracking.schema import CHECKPOINTS, PREDICTIONS
from training.config import TrainConfig
from training.index import build_index
from training.metrics import nrmse, subject_nrmse
from training.predict_output import subjects_path
from training.runner import train

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
MODEL = "demo-c2"
NEW_SUBJECT = "NDARZZ000001"


@pytest.fixture(scope="module")
def registered(feature_env, mongo_server_uri):
    """(settings, train result): a model trained on R1 with R2 as validation, registered as
    ``demo-c2`` v1 with alias ``production``."""
    settings = Settings(
        redis_url=feature_env.redis_url,
        mongo_uri=mongo_server_uri,
        mongo_db=f"t_predict_{uuid.uuid4().hex[:8]}",
        data_dir=feature_env.data_dir,
        feature_repo=FEATURE_REPO,
        redis_source="configured",
        mongo_source="configured",
    )
    config = TrainConfig(
        challenge=2,
        data=feature_env.c2_files,
        val_release="R2",
        epochs=2,
        batch_size=8,
        workers=0,
        seed=0,
    )
    result = train(settings, config, progress=False)
    with open_database(settings) as db:
        best = db[CHECKPOINTS].find_one(
            {"experiment_id": ObjectId(result.experiment_id), "is_best": True}
        )
        ModelRegistry(db).register(MODEL, best["_id"], aliases=["production"])
    yield settings, result
    with open_database(settings) as db:
        db.client.drop_database(settings.mongo_db)


def _invoke(settings, *args):
    return CliRunner(env=settings.to_env()).invoke(cli, list(args))


def _copy_h5(src: Path, dst: Path, *, rows=None, channels=None, subject=None, labels=True) -> Path:
    """A copy of demo file ``src``: some windows, the first ``channels`` channels, all windows
    renamed to ``subject``, without targets when ``labels`` is False."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        n = f["data"].shape[0]
        sel = np.arange(n) if rows is None else np.asarray(rows)
        data = f["data"][sel.tolist()][:, :channels] if channels else f["data"][sel.tolist()]
        g.create_dataset(
            "data", data=data, chunks=(1, *data.shape[1:]), compression="gzip", shuffle=True
        )
        ids = f["subjects"][sel.tolist()]
        if subject is not None:
            ids = np.full(len(sel), subject.encode(), dtype="S12")
        g.create_dataset("subjects", data=ids)
        if labels:
            for name in ("targets", "p_factors"):
                g.create_dataset(name, data=f[name][sel.tolist()])
        g.attrs.update(dict(f.attrs))
        g.attrs["n_windows"] = len(sel)
        g.attrs["n_channels"] = data.shape[1]
    return dst


def test_predictions_of_the_validation_release_give_the_recorded_validation_nrmse(
    registered, feature_env, tmp_path
):
    settings, result = registered
    r2 = feature_env.demo.challenge2["R2"]
    out = tmp_path / "r2.parquet"
    done = _invoke(
        settings, "predict", "--model", f"{MODEL}@production", "--data", str(r2), "--out", str(out)
    )
    assert done.exit_code == 0, done.output
    windows = pd.read_parquet(out)
    assert list(windows.columns) == ["subject_id", "window_index", "prediction", "target"]
    labelled = windows[np.isfinite(windows["target"])]
    best = result.best_metrics
    got = subject_nrmse(labelled["target"], labelled["prediction"], labelled["subject_id"])
    assert math.isclose(got, best["val_subject_nrmse"], abs_tol=1e-6), (got, best)
    assert math.isclose(
        nrmse(labelled["target"], labelled["prediction"]), best["val_nrmse"], abs_tol=1e-6
    )
    subjects = pd.read_parquet(subjects_path(out))
    index = build_index([str(r2)], keep_unlabelled=True)
    n_subjects = len(set(index.subjects.tolist()))
    assert len(windows) == len(index) and len(subjects) == n_subjects
    assert set(subjects["feature_source"]) == {"snapshot"}
    with open_database(settings) as db:
        (doc,) = db[PREDICTIONS].find({"input.path": str(Path(r2).resolve())})
        lineage = ModelRegistry(db).get_version(MODEL, "production")["lineage"]
    # recorded at registration from the run's features.service and data summary
    assert lineage["feature_service"] == "challenge2_inputs_v1" and lineage["snapshot_ids"]
    assert lineage["data"] == {
        "n_channels": 129,
        "sfreq": 100.0,
        "window_samples": 400,
        "crop_samples": 200,
    }
    assert doc["model"]["name"] == MODEL and doc["model"]["version"] == 1
    assert doc["counts"]["windows"] == len(index) and doc["counts"]["subjects"] == n_subjects
    assert doc["counts"]["sources"] == {
        "snapshot": n_subjects,
        "online": 0,
        "pushed": 0,
        "missing": 0,
    }
    assert doc["feature_service"] == "challenge2_inputs_v1" and doc["snapshot_ids"]
    assert len(doc["input"]["sha256"]) == 64 and doc["out"]["windows"] == str(out)
    assert doc["timing"]["total_s"] > 0 and doc["host"]
    listed = _invoke(settings, "models", "predictions", MODEL)
    assert listed.exit_code == 0 and str(doc["_id"]) in listed.output


def test_a_file_of_other_channels_is_refused_naming_both_shapes(registered, feature_env, tmp_path):
    settings, _ = registered
    r2 = feature_env.demo.challenge2["R2"]
    narrow = _copy_h5(r2, tmp_path / "narrow.h5", channels=64)
    done = _invoke(settings, "predict", "--model", f"{MODEL}:1", "--data", str(narrow))
    assert done.exit_code != 0
    assert "Traceback" not in done.output
    assert f"{narrow} has 64 channels x 400 samples at 100 Hz" in done.output
    assert f"model {MODEL} v1 was trained on 129 channels x 400 samples at 100 Hz" in done.output
    assert not list((settings.data_dir / "predictions").glob("narrow.*"))  # nothing written
    with open_database(settings) as db:
        assert db[PREDICTIONS].count_documents({"input.path": str(narrow.resolve())}) == 0


def test_a_subject_the_store_does_not_know_is_pushed_first(registered, feature_env, tmp_path):
    settings, _ = registered
    r2 = feature_env.demo.challenge2["R2"]
    new = _copy_h5(r2, tmp_path / "new.h5", rows=range(4), subject=NEW_SUBJECT, labels=False)
    with FeatureStoreClient(settings, cache_size=0) as client:
        before, _ = client.get_online_matrix([NEW_SUBJECT], "challenge2_inputs_v1")
    assert np.isnan(before).all()
    out = tmp_path / "new.parquet"
    done = _invoke(settings, "predict", "--model", MODEL, "--data", str(new), "--out", str(out))
    assert done.exit_code == 0, done.output
    assert re.search(
        f"subject {NEW_SUBJECT} not in the online store: pushing .*new.h5 first", done.output
    )
    windows = pd.read_parquet(out)
    assert list(windows.columns) == ["subject_id", "window_index", "prediction"]
    assert windows["window_index"].tolist() == [0, 1, 2, 3]
    assert np.isfinite(windows["prediction"]).all()
    subjects = pd.read_parquet(subjects_path(out))
    assert subjects["feature_source"].tolist() == ["pushed"]
    with open_database(settings) as db:
        (doc,) = db[PREDICTIONS].find({"input.path": str(new.resolve())})
    assert doc["subject_sources"] == {NEW_SUBJECT: "pushed"} and doc["pushed_snapshot_ids"]
    assert doc["counts"]["sources"]["pushed"] == 1 and "nrmse" not in doc["metrics"]
    with FeatureStoreClient(settings, cache_size=0) as client:
        after, _ = client.get_online_matrix([NEW_SUBJECT], "challenge2_inputs_v1")
    assert not np.isnan(after).all()
