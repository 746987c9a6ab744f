"""`eegfs features ...` end to end on the demo data, as `make features` runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from features_testlib import write_h5

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
    build = runner.invoke(
        cli,
        [
            "features",
            "build",
            "--input",
            *files,
            "--participants",
            str(small_demo.participants),
            "--no-progress",
        ],
        env=env,
    )
    assert build.exit_code == 0, build.output
    assert "4 computed, 0 skipped" in build.output and "flagged windows: 0" in build.output
    again = runner.invoke(
        cli,
        [
            "features",
            "build",
            "--input",
            *files,
            "--participants",
            str(small_demo.participants),
            "--no-progress",
        ],
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
