"""Redis faults and credentials: a SIGKILLed Redis loses no queued job; an ACL user works."""

from __future__ import annotations

import os
import signal
import time

import psutil
from click.testing import CliRunner
from jobs_testlib import wait_for

from eegfs.cli import cli
from jobs.heartbeats import list_workers
from jobs.keys import JobKeys
from jobs.queue import JobQueue
from services.connections import redis_client


def _live(settings, name) -> bool:
    workers = list_workers(redis_client(settings.redis_url), JobKeys(settings.jobs_prefix))
    return any(w.name == name and w.state == "live" for w in workers)


def _states(queue, ids) -> list[str]:
    return [queue.get(i, with_rq=False).state for i in ids]


def test_redis_killed_and_restarted_loses_no_queued_job(
    start_local_redis, settings, workers, queue_name, tmp_path
):
    workdir = tmp_path / "redis-aof"
    server = start_local_redis(workdir=workdir)
    job_settings = settings.with_overrides(redis_url=server.uri, jobs_prefix="r", heartbeat_s=2.0)
    # A worker on another queue lives through the outage; the jobs wait on a queue of their own.
    workers.start(job_settings, f"{queue_name}-other", name="wa")
    wait_for(lambda: _live(job_settings, "wa"), 60, "the worker to beat")
    with JobQueue(job_settings) as queue:
        ids = queue.submit_many([("spin", ["200000"])] * 8, queue=queue_name)
        time.sleep(1.5)  # appendfsync everysec: the submissions are on disk by now
        assert _states(queue, ids) == ["queued"] * 8
    os.kill(server.pid, signal.SIGKILL)
    psutil.Process(server.pid).wait(timeout=30)
    start_local_redis(port=server.port, workdir=workdir)
    with JobQueue(job_settings) as queue:
        assert _states(queue, ids) == ["queued"] * 8, "every submitted job is still queued"
        wait_for(lambda: _live(job_settings, "wa"), 60, "the old worker to beat again")
        other = queue.submit("noop", queue=f"{queue_name}-other")
        wait_for(lambda: _states(queue, [other]) == ["finished"], 60, "the old worker's job")
        workers.start(job_settings, queue_name, name="wb")
        wait_for(
            lambda: _states(queue, ids) == ["finished"] * 8,
            240,
            "all queued jobs to finish after the restart",
            interval_s=0.5,
        )
        assert {queue.get(i, with_rq=False).attempts for i in ids} == {1}


def test_acl_user_with_password_works_end_to_end(start_local_redis, settings, workers, queue_name):
    server = start_local_redis()
    admin = redis_client(server.uri)
    admin.execute_command("ACL", "SETUSER", "jobs", "on", ">s3cret-pw", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    url = f"redis://jobs:s3cret-pw@127.0.0.1:{server.port}/0"
    job_settings = settings.with_overrides(redis_url=url, jobs_prefix="a", heartbeat_s=2.0)
    worker = workers.start(job_settings, queue_name, name="wa")
    wait_for(lambda: _live(job_settings, "wa"), 60, "the worker to beat")
    with JobQueue(job_settings) as queue:
        job_id = queue.submit("noop", queue=queue_name)
        wait_for(lambda: _states(queue, [job_id]) == ["finished"], 60, "the job to finish")
    env = job_settings.to_env()
    out = CliRunner().invoke(cli, ["workers"], env=env)
    assert out.exit_code == 0 and "wa" in out.output
    wrong = CliRunner().invoke(
        cli, ["jobs", "list"], env={**env, "REDIS_URL": url.replace("s3cret", "bad")}
    )
    assert wrong.exit_code == 1 and "authentication failed" in wrong.output
    assert "s3cret" not in out.output + wrong.output
    assert "s3cret" not in worker.log_path.read_text(errors="replace")
