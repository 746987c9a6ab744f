"""`eegfs features ...` end to end on the demo data, as `make features` runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from features_testlib import write_h5, write_participants

from eegfs.cli import cli


@pytest.fixture
def env(settings):
    return {
        "EEGFS_DATA_DIR": str(settings.data_dir),
        "REDIS_URL": settings.redis_url,
        "EEGFS_FEATURE_REPO": str(settings.feature_repo),
    }


def test_build_apply_materialize_get_every_demo_subject(small_demo, env, settings):
    runner = CliRunner()
    files = [str(p) for p in small_demo.files]
    build_args = [
        "features",
        "build",
        "--input",
        *files,
        "--participants",
        str(small_demo.participants),
        "--no-progress",
    ]
    build = runner.invoke(
        cli,
        build_args,
        env=env,
    )
    assert build.exit_code == 0, build.output
    assert "4 computed, 0 skipped" in build.output and "flagged windows: 0" in build.output
    assert "quality gates: 0 subject(s) held back, 0 accepted" in build.output  # demo passes
    again = runner.invoke(
        cli,
        build_args,
        env=env,
    )
    assert "0 computed, 4 skipped" in again.output
    for args in (["features", "apply"], ["features", "materialize"]):
        res = runner.invoke(cli, args, env=env)
        assert res.exit_code == 0, res.output
    for release, ids in small_demo.subjects.items():
        for sid in ids:
            res = runner.invoke(cli, ["features", "get", "--subject", f"sub-{sid}"], env=env)
            assert res.exit_code == 0, res.output
            rec = json.loads(res.output)
            assert rec["subject_id"] == sid and rec["served_snapshot_id"].startswith("fs_")
            for service, feats in rec["features"].items():
                band = {k: v for k, v in feats.items() if k not in ("age", "sex", "ehq_total")}
                assert all(v is not None for v in band.values()), (release, sid, service)
                assert feats["sex"] in ("M", "F")
    labels = runner.invoke(
        cli, ["features", "get", "--subject", ids[0], "--service", "challenge2_labels_v1"], env=env
    )
    assert "externalizing" in labels.output
    shell = runner.invoke(cli, ["features", "env"], env=env)
    assert shell.output.startswith("export EEGFS_FEAST_REDIS=") and ",db=" in shell.output


def test_bad_input_is_one_clear_error(tmp_path, env):
    bad = write_h5(tmp_path / "bad.h5", data=np.zeros((4, 400), np.float32), chunks=None)
    tsv = tmp_path / "p.tsv"
    tsv.write_text("participant_id\nsub-NDARAA000001\n")
    res = CliRunner().invoke(
        cli, ["features", "build", "--input", str(bad.path), "--participants", str(tsv)], env=env
    )
    assert res.exit_code == 1 and "bad.h5: dataset 'data' has rank 2" in res.output
    res = CliRunner().invoke(cli, ["features", "get", "--subject", "NDARAA000001"], env=env)
    assert res.exit_code == 1 and "eegfs features materialize" in res.output
    res = CliRunner().invoke(cli, ["features", "build", "--participants", str(tsv)], env=env)
    assert res.exit_code == 2 and "--input" in res.output


def _build(env, *args):
    return CliRunner().invoke(cli, ["features", "build", "--no-progress", *map(str, args)], env=env)


def test_bad_file_exits_3_keeps_online_values_and_is_reported_everywhere(
    tmp_path, cli_env, settings
):
    """The issue's case: an all-flat file built after a good one. It used to exit 0 and make
    Redis serve good_fraction 0.0 and null band powers for subjects that had good features."""
    from pymongo import MongoClient

    ids = ["NDARAA000001", "NDARAA000002"]
    good = write_h5(tmp_path / "good.h5", subjects=ids, windows_per_subject=4, seed=1)
    tsv = write_participants(tmp_path / "participants.tsv", ids)
    assert _build(cli_env, "--input", good.path, "--participants", tsv).exit_code == 0
    for args in (["features", "apply"], ["features", "materialize"]):
        assert CliRunner().invoke(cli, args, env=cli_env).exit_code == 0

    def online() -> dict:
        res = CliRunner().invoke(cli, ["features", "get", "--subject", ids[0]], env=cli_env)
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["features"]["challenge2_inputs_v1"]

    served = online()
    assert served["good_fraction"] == 1.0 and served["logabs_mean_alpha"] is not None

    flat = write_h5(
        tmp_path / "flat.h5", subjects=ids, windows_per_subject=4, data=np.zeros((8, 129, 400))
    )
    res = _build(cli_env, "--input", flat.path, "--participants", tsv)
    assert res.exit_code == 3, res.output
    assert "quality gates: 2 subject(s) held back, 0 accepted" in res.output
    assert "subjects that failed a data-quality gate" in res.output
    assert "held back" in res.output and "good_fraction: 0.00 of the windows are good" in res.output
    assert "Traceback" not in res.output
    assert CliRunner().invoke(cli, ["features", "materialize"], env=cli_env).exit_code == 0
    assert online() == served  # Redis still serves the good values

    shown = CliRunner().invoke(cli, ["features", "quality"], env=cli_env)
    assert shown.exit_code == 0 and "held back: 2 subject(s)" in shown.output
    assert "flat.h5" in shown.output and "total_power: no finite" in shown.output
    doc = json.loads(CliRunner().invoke(cli, ["features", "quality", "--json"], env=cli_env).output)
    assert doc["n_held_back"] == 2 and doc["inputs"][0]["quality"]["subjects"][ids[0]]["reasons"]

    reg = CliRunner().invoke(cli, ["datasets", "register", str(flat.path)], env=cli_env)
    assert reg.exit_code == 0 and "0 subject(s) served, 2 held back" in reg.output, reg.output
    with MongoClient(settings.mongo_uri) as client:
        record = client[settings.mongo_db].datasets.find_one({"path": str(flat.path.resolve())})
    assert record["quality"]["n_held_back"] == 2
    assert {r["subject_id"] for r in record["quality"]["rejected"]} == set(ids)
    assert all(r["promoted"] is False and r["reasons"] for r in record["quality"]["rejected"])

    # evaluated again without --force: still held back, still exit 3; --accept-failing serves it
    assert _build(cli_env, "--input", flat.path, "--participants", tsv).exit_code == 3
    res = _build(cli_env, "--input", flat.path, "--participants", tsv, "--accept-failing")
    assert res.exit_code == 0 and "0 subject(s) held back, 2 accepted" in res.output, res.output
    assert "accepted" in res.output
    assert CliRunner().invoke(cli, ["features", "materialize"], env=cli_env).exit_code == 0
    assert online()["good_fraction"] == 0.0  # what the user asked for, and recorded


def test_lenient_build_skips_bad_participants_rows_with_a_warning(tmp_path, env):
    ids = ["NDARAA000001", "NDARAA000002"]
    spec = write_h5(tmp_path / "a.h5", subjects=ids, windows_per_subject=2)
    tsv = write_participants(tmp_path / "participants.tsv", ids)
    tsv.write_text(tsv.read_text() + "garbage\nx\ty\tz\n")
    strict = _build(env, "--input", spec.path, "--participants", tsv)
    assert strict.exit_code == 1 and "2 bad row(s): line 4: 1 tab-separated" in strict.output
    assert "--lenient" in strict.output and "Traceback" not in strict.output
    lenient = _build(env, "--input", spec.path, "--participants", tsv, "--lenient")
    assert lenient.exit_code == 0, lenient.output
    assert "skipped 2 bad row(s) (--lenient): line 4: 1 tab-separated" in lenient.output
    assert "rows skipped (--lenient): 2" in lenient.output
