"""What ``eegfs`` writes when its output is a pipe (CI logs, ``| tee``): no ANSI colour codes,
no library warnings (they go to the log, shown from ``--log-level INFO``), exit codes that say
what happened. Real subprocesses, stdout and stderr both pipes."""

from __future__ import annotations

import json
import os
import sys
import textwrap

from cli_testlib import REPO, TRACEBACK, assert_clean_failure, run_eegfs

ANSI = "\x1b["


def _assert_plain(outcome) -> None:
    assert outcome.exit_code == 0, outcome.text
    assert ANSI not in outcome.text, repr(outcome.text[:2000])
    assert "Warning" not in outcome.text, outcome.text
    assert TRACEBACK not in outcome.text, outcome.text


def test_materialize_and_get_print_plain_text(settings, small_demo, start_local_redis, tmp_path):
    redis = start_local_redis()
    env = settings.with_overrides(redis_url=redis.uri).to_env()
    files = [str(p) for p in small_demo.files]
    build = run_eegfs(
        ["features", "build", "--input", *files, "--participants", str(small_demo.participants)],
        env,
        tmp_path,
    )
    _assert_plain(build)
    shown = {}
    for step in ("features apply", "features materialize", "runs list"):
        shown[step] = run_eegfs(step.split(), env, tmp_path)
        _assert_plain(shown[step])
    assert "online store serves" in shown["features materialize"].text  # Feast's lines: the log
    subject = small_demo.participants.read_text().splitlines()[1].split("\t")[0]
    known = run_eegfs(["features", "get", "--subject", subject], env, tmp_path)
    _assert_plain(known)
    assert json.loads(known.text)["subject_id"] == subject.removeprefix("sub-")

    _assert_help_example_works(env, small_demo, tmp_path)

    unknown = run_eegfs(["features", "get", "--subject", "NDARZZZZ9999"], env, tmp_path)
    assert_clean_failure(unknown, r"subject NDARZZZZ9999 is not in the online store \(service")
    kept = run_eegfs(
        ["features", "get", "--subject", "NDARZZZZ9999", "--allow-missing"], env, tmp_path
    )
    _assert_plain(kept)
    values = json.loads(kept.text)["features"]["challenge2_inputs_v1"].values()
    assert values and all(v is None for v in values)

    no_service = ["features", "get", "--subject", subject, "--service", "nope_v1"]
    assert_clean_failure(run_eegfs(no_service, env, tmp_path), r"unknown feature service 'nope_v1'")

    malformed = run_eegfs(["features", "get", "--subject", "NDAR 12"], env, tmp_path)
    assert_clean_failure(malformed, r"'NDAR 12'.*letters and digits")
    assert malformed.exit_code == 2


def _assert_help_example_works(env, demo, tmp_path) -> None:
    """The example of `eegfs features get --help`, run in a directory holding the demo data."""
    import shutil
    import subprocess

    help_text = run_eegfs(["features", "get", "--help"], env, tmp_path).text
    lines = [line.strip() for line in help_text.splitlines()]
    example = next(line for line in lines if line.startswith("eegfs features get --subject"))
    workdir = tmp_path / "session"
    (workdir / "data" / "demo").mkdir(parents=True)
    shutil.copy(demo.participants, workdir / "data" / "demo" / "participants.tsv")
    command = example.replace("eegfs ", f"{sys.executable} -m eegfs ", 1)
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=workdir,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    assert json.loads(proc.stdout)["features"]["challenge2_inputs_v1"]


def test_services_status_prints_no_colour_codes(down_settings, tmp_path):
    outcome = run_eegfs(["services", "status"], down_settings.to_env(), tmp_path)
    _assert_plain(outcome)
    assert "does not answer" in outcome.text


def test_worker_with_redis_down_fails_at_once(down_settings, tmp_path):
    outcome = run_eegfs(["worker", "--burst"], down_settings.to_env(), tmp_path, timeout_s=120)
    assert_clean_failure(outcome, r"Redis at redis://127\.0\.0\.1:\d+/0 does not answer")


def _warn_under(level: str, tmp_path):
    import subprocess

    code = textwrap.dedent(
        f"""
        import warnings
        from eegfs.cli import _route_logging
        _route_logging({level!r})
        warnings.warn("a library says something will change", FutureWarning)
        warnings.warn("a library says something is old", DeprecationWarning)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )


def test_library_warnings_go_to_the_log(tmp_path):
    quiet = _warn_under("WARNING", tmp_path)
    assert quiet.stdout == "" and quiet.stderr == ""
    shown = _warn_under("INFO", tmp_path)
    assert "py.warnings" in shown.stderr and "something will change" in shown.stderr
    assert shown.stdout == ""
