"""``eegfs runs reproduce``: a recorded run rebuilt from its record gives identical metrics, and a
modified feature snapshot is refused (checksum) or, with --allow-modified, shows in the metrics.

Real servers: the module's materialized feature store (Redis) and this test's MongoDB database.
"""

from __future__ import annotations

import dataclasses
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines import feature_tables as ft
from tracking import Tracker
from training.config import TrainConfig
from training.errors import ReproduceError
from training.reproduce import compare_epochs, reproduce
from training.runner import train


def _demo_run(settings, env) -> str:
    """The demo's run (online features, seeded), two epochs on the small demo data."""
    config = TrainConfig(challenge=2, data=env.c2_files, epochs=2, batch_size=8, workers=0, seed=0)
    return train(settings, config, progress=False).experiment_id


def _change_one_value(features_dir, challenge: int = 2) -> str:
    """Add 10 to the first feature value of the first row of the subject features table."""
    manifest = ft.Manifest.load(features_dir)
    path = manifest.files(ft.SUBJECT_FEATURES, challenge)[0]
    table = pq.read_table(path)
    name = next(
        f.name for f in table.schema if pa.types.is_floating(f.type) and f.name != "created"
    )
    values = table.column(name).to_pylist()
    values[0] += 10.0
    index = table.schema.get_field_index(name)
    pq.write_table(
        table.set_column(index, name, pa.array(values, table.schema.field(name).type)), path
    )
    return path.name


def test_reproduce_of_the_demo_run_gives_identical_metrics(train_settings, feature_env, clean_repo):
    from eegfs.cli import cli

    run_id = _demo_run(train_settings, feature_env)
    out = CliRunner(env=train_settings.to_env()).invoke(
        cli, ["runs", "reproduce", run_id, "--no-progress"], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    assert "identical: every metric of 2 epoch(s) is equal" in out.output
    assert "checksums verified" in out.output
    with Tracker(train_settings) as tracker:
        (rep,) = tracker.get_run(run_id)["reproductions"]
        assert rep["identical"] and rep["code_matches"] and rep["max_abs_diff"] == 0.0
        assert rep["epochs_compared"] == 2 and rep["snapshots"]["modified"] == []
        again = tracker.get_run(rep["reproduction_id"])
        assert again["status"] == "completed" and "reproduction" in again["tags"]


def test_a_modified_snapshot_is_refused_and_allow_modified_reports_the_difference(
    train_settings, feature_env, clean_repo, tmp_path
):
    run_id = _demo_run(train_settings, feature_env)
    copy = tmp_path / "copy"
    shutil.copytree(feature_env.data_dir / "features", copy / "features")
    changed = _change_one_value(copy / "features")
    settings = dataclasses.replace(train_settings, data_dir=copy)
    with pytest.raises(ReproduceError, match=f"fails its checksum: .*{changed}"):
        reproduce(settings, run_id, epochs=1)
    said = []
    rep = reproduce(settings, run_id, epochs=1, allow_modified=True, echo=said.append)
    assert not rep.identical and rep.max_abs_diff > 0
    assert rep.first_diff_epoch == 0 and rep.epochs_compared == 1
    assert any(changed in line for line in said)
    with Tracker(train_settings) as tracker:
        (stored,) = tracker.get_run(run_id)["reproductions"]
    assert stored["identical"] is False and stored["first_diff_epoch"] == 0


def test_compare_epochs_names_the_largest_difference_and_where_it_starts():
    same = {0: {"val_loss": 1.0}, 1: {"val_loss": 0.5}}
    assert compare_epochs(same, same)["identical"]
    got = compare_epochs(same, {0: {"val_loss": 1.0}, 1: {"val_loss": 0.25}})
    assert got == {
        "identical": False,
        "max_abs_diff": 0.25,
        "first_diff_epoch": 1,
        "first_diff_metric": "val_loss",
    }
    assert compare_epochs(same, {0: {"val_loss": 1.0}})["max_abs_diff"] == float("inf")
