"""What `eegfs jobs`, `eegfs workers` and `eegfs sweep` print for people (the JSON forms are
tested beside the queue): tables and lines that name the job, sweep and next command."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from eegfs.cli import cli


def _invoke(env, *args):
    result = CliRunner().invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def test_jobs_text_output_names_the_job_and_the_next_command(job_settings, tmp_path):
    env = job_settings.to_env()
    assert "no worker has been seen" in _invoke(env, "workers").output
    features = _invoke(env, "jobs", "submit", "features", "clean")
    assert features.exit_code == 2 and "only `features build` can be submitted" in features.output
    trial = _invoke(env, "jobs", "submit", "trial")
    assert trial.exit_code == 2 and "made by `eegfs sweep create`" in trial.output

    data = tmp_path / "w.h5"
    data.write_bytes(b"")
    submitted = _invoke(
        env,
        "jobs",
        "submit",
        "features",
        "build",
        "--input",
        str(data),
        "--participants",
        str(data),
    )
    assert submitted.exit_code == 0, submitted.output
    first, follow = submitted.output.strip().splitlines()
    job_id = first.split()[1]
    assert first.startswith(f"job {job_id} queued on 'default': features build --input ")
    assert follow == f"follow it with   eegfs jobs show {job_id}"

    listed = _invoke(env, "jobs", "list")
    assert job_id in listed.output and "queued" in listed.output and "0/3" in listed.output
    assert _invoke(env, "jobs", "list", "--state", "finished").output.count(job_id) == 0
    shown = _invoke(env, "jobs", "show", job_id).output
    assert f"id            {job_id}" in shown and "state         queued" in shown
    assert 'args          ["--input"' in shown and "max_attempts  3" in shown


def test_sweep_text_output_lists_trials_and_what_is_left(job_settings, tmp_path):
    env = job_settings.to_env()
    assert _invoke(env, "sweep", "list").output.strip() == "no sweeps"
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "train": {"data": [str(tmp_path / "c2.h5")], "epochs": 1},
                "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            }
        )
    )
    created = _invoke(
        env, "sweep", "create", "s-text", "--challenge", "2", "--space", str(space), "--trials", "3"
    )
    assert created.exit_code == 0, created.output
    assert created.output.startswith("sweep s-text: 3 trial job(s) queued on 'default' (tpe")
    assert "`eegfs sweep show s-text`" in created.output
    assert json.loads(_invoke(env, "sweep", "list", "--json").output) == ["s-text"]
    shown = _invoke(env, "sweep", "show", "s-text").output
    assert "trials          no trials yet (of 3 queued)" in shown, shown  # asked by the jobs
    assert "best" not in shown.split("(of 3 queued)")[1]
    missing = _invoke(env, "sweep", "show", "nope")
    assert missing.exit_code != 0 and "nope" in missing.output
