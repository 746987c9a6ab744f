"""Real ``eegfs worker`` processes running real training jobs: exactly-once, SIGKILL, SIGSTOP."""

from __future__ import annotations

import os
import signal

import psutil
from jobs_testlib import train_args, wait_for

from jobs.heartbeats import list_workers
from jobs.keys import JobKeys
from jobs.queue import JobQueue
from services.connections import redis_client
from tracking.database import open_database
from tracking.jobruns import job_runs
from tracking.schema import EPOCHS


def _live(settings, *names) -> bool:
    client = redis_client(settings.redis_url)
    live = {
        w.name for w in list_workers(client, JobKeys(settings.jobs_prefix)) if w.state == "live"
    }
    return set(names) <= live


def _runs(settings, job_id):
    with open_database(settings, indexes=False) as db:
        return job_runs(db, job_id)


def _epochs_logged(settings, experiment_id) -> int:
    from bson import ObjectId

    with open_database(settings, indexes=False) as db:
        return db[EPOCHS].count_documents({"experiment_id": ObjectId(experiment_id)})


def _start_pair(workers, settings, queue):
    names = ("wa", "wb")
    procs = [workers.start(settings, queue, name=n) for n in names]
    wait_for(lambda: _live(settings, *names), 60, "both workers to beat")
    return procs


def test_two_workers_run_six_jobs_exactly_once(job_settings, queue_name, workers, jobs_env):
    _start_pair(workers, job_settings, queue_name)
    with JobQueue(job_settings) as queue:
        ids = queue.submit_many(
            [("train", train_args(jobs_env, "--seed", str(i), epochs=1)) for i in range(6)],
            queue=queue_name,
        )
        wait_for(
            lambda: all(queue.get(i, with_rq=False).state == "finished" for i in ids),
            300,
            "six training jobs to finish",
            interval_s=1.0,
        )
        records = [queue.get(i) for i in ids]
    assert [r.attempts for r in records] == [1] * 6
    assert {r.worker for r in records} == {"wa", "wb"}, "both workers took jobs"
    assert {r.rq_status for r in records} == {"finished"}
    for record in records:
        runs = _runs(job_settings, record.id)
        assert [(r["attempt"], r["status"]) for r in runs] == [(1, "completed")]
        assert runs[0]["experiment_id"] == record.experiments[1], "linked both ways"


def _victim_mid_training(workers, settings, queue_name, env, queue):
    victim = workers.start(settings, queue_name, name="victim")
    wait_for(lambda: _live(settings, "victim"), 60, "the victim worker to beat")
    job_id = queue.submit("train", train_args(env, epochs=8), queue=queue_name)
    experiment = wait_for(
        lambda: queue.get(job_id, with_rq=False).experiments.get(1), 120, "the first run"
    )
    wait_for(lambda: _epochs_logged(settings, experiment) >= 1, 120, "a first epoch")
    return victim, job_id, experiment


def test_sigkilled_worker_job_is_rerun_elsewhere(job_settings, queue_name, workers, jobs_env):
    with JobQueue(job_settings) as queue:
        victim, job_id, first = _victim_mid_training(
            workers, job_settings, queue_name, jobs_env, queue
        )
        family = workers.descendants(victim)
        assert family, "the job runs in a work horse and an eegfs process below the worker"
        workers.start(job_settings, queue_name, name="rescuer")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, "the job's processes die with their worker (PR_SET_PDEATHSIG)"
        wait_for(
            lambda: queue.get(job_id, with_rq=False).state == "finished",
            240,
            "the job to be rerun by the other worker",
            interval_s=1.0,
        )
        record = queue.get(job_id)
    assert record.attempts == 2 and record.worker == "rescuer"
    runs = _runs(job_settings, job_id)
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "completed")]
    assert runs[0]["experiment_id"] == first
    assert runs[0]["error"].startswith("worker lost")
    assert record.experiments == {1: first, 2: runs[1]["experiment_id"]}


def test_frozen_worker_cannot_complete_a_handed_on_job(job_settings, queue_name, workers, jobs_env):
    with JobQueue(job_settings) as queue:
        victim, job_id, first = _victim_mid_training(
            workers, job_settings, queue_name, jobs_env, queue
        )
        frozen = [psutil.Process(victim.pid), *workers.descendants(victim)]
        for proc in frozen:
            proc.suspend()
        try:
            workers.start(job_settings, queue_name, name="rescuer")
            wait_for(
                lambda: queue.get(job_id, with_rq=False).state == "finished",
                240,
                "the handed-on job to finish on the other worker",
                interval_s=1.0,
            )
        finally:
            for proc in frozen:
                proc.resume()
        # The old attempt wakes up: its worker notices the handoff and kills it, and nothing it
        # does may mark the job or its run completed.
        psutil.wait_procs(frozen[1:], timeout=60)
        wait_for(lambda: _live(job_settings, "victim"), 30, "the woken worker to beat again")
        record = queue.get(job_id)
    assert record.state == "finished" and record.attempts == 2 and record.worker == "rescuer"
    assert record.rq_status == "finished"
    runs = _runs(job_settings, job_id)
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "completed")]
    assert runs[0]["experiment_id"] == first


def test_feature_build_job_and_a_job_whose_file_is_missing(
    job_settings, queue_name, workers, jobs_env, tmp_path
):
    missing = tmp_path / "not-on-this-worker.h5"
    with JobQueue(job_settings) as queue:
        build = queue.submit(
            "features build",
            ["--input", *jobs_env.c2_files, "--participants", str(jobs_env.demo.participants)],
            queue=queue_name,
        )
        broken = queue.submit(
            "train", train_args(jobs_env, "--data", str(missing), epochs=1), queue=queue_name
        )
        workers.start(job_settings, queue_name, "--burst", name="wa").wait(timeout=300)
        built, failed = queue.get(build), queue.get(broken)
    assert (built.state, built.rq_status, built.result["returncode"]) == ("finished", "finished", 0)
    assert (job_settings.data_dir / "features").is_dir()
    assert (failed.state, failed.rq_status, failed.attempts) == ("failed", "failed", 1)
    assert str(missing) in failed.reason or "not-on-this-worker.h5" in failed.reason


def test_cancel_stops_a_running_job_and_its_run(job_settings, queue_name, workers, jobs_env):
    with JobQueue(job_settings) as queue:
        worker, job_id, first = _victim_mid_training(
            workers, job_settings, queue_name, jobs_env, queue
        )
        family = workers.descendants(worker)
        assert "stop sent to worker victim" in queue.cancel(job_id)
        wait_for(lambda: queue.get(job_id, with_rq=False).state == "canceled", 60, "the cancel")
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, "the horse and the training process are gone"
        record = queue.get(job_id)
    assert record.rq_status == "stopped" and record.reason == "canceled by request"
    assert [(r["status"], r["error"]) for r in _runs(job_settings, job_id)] == [
        ("stopped", "canceled by request")
    ]
    assert worker.poll() is None, "the worker itself goes on"
