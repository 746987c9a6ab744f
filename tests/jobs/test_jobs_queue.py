"""The job queue without workers: the fenced state machine, the CLI, settings, source rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from eegfs.cli import cli
from jobs.errors import JobNotFoundError, JobStateError, SweepError
from jobs.fence import Attempt
from jobs.queue import JobQueue
from jobs.space import load_space, train_options
from jobs.sweeps import OBJECTIVE
from services.connections import redis_client
from services.settings import JobContext, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def queue(job_settings):
    with JobQueue(job_settings) as q:
        yield q


def test_fence_lets_only_the_current_attempt_finish(queue):
    job_id = queue.submit("noop")
    first = queue.fence.begin(job_id, "wa")
    assert first == Attempt(job_id, 1, "wa")
    assert queue.fence.begin(job_id, "wb") is None, "a started job is not started twice"
    assert queue.fence.hand_on(first, "worker lost: wa") == "queued"
    second = queue.fence.begin(job_id, "wb")
    assert second.number == 2
    assert not queue.fence.claim(first) and not queue.fence.finish(first, "finished")
    assert queue.fence.claim(second) and queue.fence.finish(second, "finished", result="1")
    record = queue.get(job_id, with_rq=False)
    assert (record.state, record.attempts, record.worker, record.result) == ("finished", 2, "wb", 1)
    assert queue.fence.running() == {}
    assert queue.client.ttl(queue.keys.job(job_id)) > 0, "an ended job's record expires"
    assert [h.outcome for h in queue.fence.pending_handoffs()] == ["queued"]


def test_lost_attempts_use_up_max_attempts(queue):
    job_id = queue.submit("noop", max_attempts=2)
    for n, expected in ((1, "queued"), (2, "failed")):
        attempt = queue.fence.begin(job_id, f"w{n}")
        assert queue.fence.hand_on(attempt, "worker lost: gone") == expected
    record = queue.get(job_id, with_rq=False)
    assert record.state == "failed" and "no attempts left (2 of 2 used)" in record.reason
    queue.retry(job_id)
    record = queue.get(job_id)
    assert (record.state, record.max_attempts, record.rq_status) == ("queued", 4, "queued")


def test_cancel_and_retry(queue):
    job_id = queue.submit("spin", ["10"])
    assert "canceled" in queue.cancel(job_id)
    record = queue.get(job_id)
    assert (record.state, record.rq_status) == ("canceled", "canceled")
    with pytest.raises(JobStateError, match="already ended"):
        queue.cancel(job_id)
    queue.retry(job_id)
    assert queue.get(job_id).rq_status == "queued"
    with pytest.raises(JobStateError, match="only failed or canceled"):
        queue.retry(job_id)
    with pytest.raises(JobNotFoundError, match="no job 'nope'"):
        queue.get("nope")


def test_submit_rejects_bad_jobs(queue):
    with pytest.raises(ValueError, match="unknown job command 'rm'"):
        queue.submit("rm", ["-rf"])
    with pytest.raises(ValueError, match="max-attempts"):
        queue.submit("noop", max_attempts=0)
    assert queue.list() == []


def test_cli_submit_list_show_cancel(job_settings, tmp_path):
    runner, env = CliRunner(), job_settings.to_env()
    bad = runner.invoke(cli, ["jobs", "submit", "train", "--epochs", "x"], env=env)
    assert bad.exit_code == 2 and "'x' is not a valid integer" in bad.output
    assert "Traceback" not in bad.output
    data = tmp_path / "f.h5"
    data.write_bytes(b"")
    out = runner.invoke(
        cli,
        ["jobs", "submit", "--json", "train", "--challenge", "2", "--data", "f.h5"],
        env=env,
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    record = json.loads(out.output)
    assert record["state"] == "queued" and record["command"] == "train"
    assert "--upload-checkpoints" in record["args"]
    listed = json.loads(runner.invoke(cli, ["jobs", "list", "--json"], env=env).output)
    assert [r["id"] for r in listed] == [record["id"]]
    shown = json.loads(runner.invoke(cli, ["jobs", "show", record["id"], "--json"], env=env).output)
    assert shown["runs"] == [] and shown["rq_status"] == "queued"
    canceled = runner.invoke(cli, ["jobs", "cancel", record["id"]], env=env)
    assert "canceled" in canceled.output
    missing = runner.invoke(cli, ["jobs", "show", "nope"], env=env)
    assert missing.exit_code == 1 and "no job 'nope'" in missing.output
    assert json.loads(runner.invoke(cli, ["workers", "--json"], env=env).output) == []


def test_cli_names_an_unreachable_redis_without_a_traceback(job_settings):
    env = {**job_settings.to_env(), "REDIS_URL": "redis://:secret@127.0.0.1:1/0"}
    out = CliRunner().invoke(cli, ["jobs", "list"], env=env)
    assert out.exit_code == 1 and "does not answer" in out.output
    assert "secret" not in out.output and "Traceback" not in out.output


def test_job_context_round_trips_through_the_environment(job_settings):
    ctx = JobContext("j1", 3, "wa", sweep="s", trial=4)
    settings = job_settings.with_overrides(job=ctx)
    loaded = load_settings(settings.to_env(), dotenv_path=None)
    assert loaded.job == ctx
    assert (loaded.jobs_prefix, loaded.heartbeat_s) == (settings.jobs_prefix, 2.0)
    assert loaded.redis_url == settings.redis_url and loaded.mongo_db == settings.mongo_db
    with pytest.raises(ValueError, match="EEGFS_JOBS_PREFIX"):
        load_settings({"EEGFS_JOBS_PREFIX": "rq"}, dotenv_path=None)
    with pytest.raises(ValueError, match="EEGFS_JOB_ATTEMPT"):
        load_settings({"EEGFS_JOB_ID": "j", "EEGFS_JOB_ATTEMPT": "x"}, dotenv_path=None)


def test_space_file_errors_name_the_file_and_entry(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  lr: {type: float, low: 0.1}\n")
    with pytest.raises(SweepError, match=r"s\.yaml: params\.lr: a float parameter needs"):
        load_space(path)
    path.write_text("params:\n  name: {type: categorical, choices: [a]}\n")
    with pytest.raises(SweepError, match="set by the sweep itself"):
        load_space(path)
    path.write_text(
        "train: {data: [a.h5, b.h5], no_normalize: true}\nparams:\n  seed: {type: int, low: 0, high: 2}\n"
    )
    space = load_space(path)
    assert train_options(space.train) == ["--data", "a.h5", "--data", "b.h5", "--no-normalize"]
    assert space.grid() == {"seed": [0, 1, 2]}


def test_sweep_objective_is_the_challenge_primary_metric():
    from training.challenges import get_challenge

    assert {c: get_challenge(c).primary_metric for c in OBJECTIVE} == OBJECTIVE


def test_local_redis_is_append_only(start_local_redis):
    from jobs.worker import persistence_warning

    server = start_local_redis()
    client = redis_client(server.uri)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert persistence_warning(client, server.uri) is None
    client.config_set("appendonly", "no")
    assert "appendonly no" in persistence_warning(client, server.uri)


_PICKLE_LOAD = re.compile(r"\bpickle\.loads?\(")
#: The shipped code (tests may round-trip their own objects through pickle in memory).
_SOURCE_DIRS = (
    "services",
    "pipelines",
    "tracking",
    "training",
    "jobs",
    "eegfs",
    "benchmarks",
    "feature_repo",
    "dashboard",
)


def _call_text(text: str, start: int) -> str:
    """The argument text of the call whose "(" is at ``start`` (balanced parentheses)."""
    depth = 0
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start : end + 1]
    return text[start:]


def test_no_pickle_loads_in_the_source_tree():
    offenders = []
    for folder in _SOURCE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text()
            for match in _PICKLE_LOAD.finditer(text):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
            for match in re.finditer(r"\btorch\.load\(", text):
                if "weights_only=True" not in _call_text(text, match.end() - 1):
                    offenders.append(f"{path.relative_to(REPO)}: torch.load without weights_only")
    assert not offenders, "\n".join(offenders)
