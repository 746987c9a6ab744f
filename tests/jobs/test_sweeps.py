"""A sweep on two real workers: trials, pruning, the best model registered, no pickle in Redis."""

from __future__ import annotations

import json
import signal
import zlib

import yaml
from bson import ObjectId
from click.testing import CliRunner
from jobs_testlib import wait_for

from eegfs.cli import cli
from jobs.queue import JobQueue
from jobs.sweeps import create_sweep, show_sweep
from services.connections import redis_client
from tracking.database import open_database
from tracking.schema import EXPERIMENTS, MODEL_VERSIONS, MODELS

PICKLE_HEADERS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))


def _values(client):
    """Every value stored in the client's database (SCAN, never KEYS), decompressed when zlib."""
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = list(client.hgetall(key).values())
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind in ("set",):
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [v for _, fields in client.xrange(key) for v in fields.values()]
        else:
            values = []
        for value in values:
            yield key, value
            try:
                raw = zlib.decompress(value)  # RQ stores job data zlib-compressed
            except zlib.error:
                continue
            yield key, raw


def _space(tmp_path, env, epochs: int):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "train": {
                    "data": env.c2_files,
                    "epochs": epochs,
                    "workers": 0,
                    "batch_size": 16,
                    "features": "none",
                },
                "params": {
                    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                    "seed": {"type": "int", "low": 0, "high": 7},
                },
            }
        )
    )
    return space


def test_sweep_trial_of_a_killed_worker_is_failed_and_run_again(
    job_settings, queue_name, workers, jobs_env, tmp_path
):
    config = create_sweep(
        job_settings,
        "k1",
        challenge=2,
        space_path=_space(tmp_path, jobs_env, epochs=6),
        trials=2,
        sampler="random",
        seed=1,
        queue=queue_name,
    )
    victim = workers.start(job_settings, queue_name, name="victim")
    with JobQueue(job_settings) as queue:
        first = wait_for(
            lambda: next((j for j in config.jobs if queue.get(j, with_rq=False).experiments), None),
            180,
            "a trial to start training",
        )
        wait_for(
            lambda: show_sweep(job_settings, "k1")["trials"][0]["epochs_reported"] >= 1,
            180,
            "the trial to report an epoch",
        )
        workers.start(job_settings, queue_name, name="rescuer")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        wait_for(
            lambda: all(queue.get(j, with_rq=False).state == "finished" for j in config.jobs),
            600,
            "both trial jobs to finish on the rescuer",
            interval_s=2.0,
        )
        assert queue.get(first, with_rq=False).attempts == 2
    trials = show_sweep(job_settings, "k1")["trials"]
    failed = [t for t in trials if t["state"] == "fail"]
    assert len(failed) == 1 and len(trials) == 3
    retried = [t for t in trials if t["retry_of"] == failed[0]["number"]]
    assert len(retried) == 1 and retried[0]["params"] == failed[0]["params"]
    assert sorted(t["state"] for t in trials if t is not failed[0]) == ["complete", "complete"]
    with open_database(job_settings, indexes=False) as db:
        lost = db[EXPERIMENTS].find_one({"_id": ObjectId(failed[0]["experiment_id"])})
    assert lost["status"] == "failed" and lost["error"].startswith("worker lost")


def test_sweep_on_two_workers_prunes_and_registers_the_best(
    job_settings, queue_name, workers, jobs_env, tmp_path
):
    space = _space(tmp_path, jobs_env, epochs=3)
    config = create_sweep(
        job_settings,
        "s1",
        challenge=2,
        space_path=space,
        trials=8,
        sampler="random",
        pruner="median",
        pruner_startup_trials=2,
        pruner_warmup_epochs=1,
        seed=0,
        queue=queue_name,
    )
    assert len(config.jobs) == 8
    for name in ("wa", "wb"):
        workers.start(job_settings, queue_name, name=name)
    with JobQueue(job_settings) as queue:
        wait_for(
            lambda: all(queue.get(j, with_rq=False).state == "finished" for j in config.jobs),
            600,
            "eight trial jobs to finish",
            interval_s=2.0,
        )
        assert {queue.get(j, with_rq=False).worker for j in config.jobs} == {"wa", "wb"}
    doc = show_sweep(job_settings, "s1")
    states = [t["state"] for t in doc["trials"]]
    assert len(states) == 8 and set(states) <= {"complete", "pruned"}, states
    assert states.count("pruned") >= 1, "the median pruner stopped at least one trial"
    with open_database(job_settings, indexes=False) as db:
        for trial in doc["trials"]:
            exp = db[EXPERIMENTS].find_one({"_id": ObjectId(trial["experiment_id"])})
            assert {"sweep:s1", f"trial:{trial['number']}"} <= set(exp["tags"])
            assert exp["job"]["sweep"] == "s1" and exp["job"]["trial"] == trial["number"]
            expected = ("stopped", "pruned") if trial["state"] == "pruned" else ("completed", None)
            assert (exp["status"], exp["error"]) == expected
        model = db[MODELS].find_one({"name": "c2-cnn"})
        version = db[MODEL_VERSIONS].find_one(
            {"name": "c2-cnn", "version": model["aliases"]["sweep-s1"]}
        )
        assert str(version["lineage"]["experiment_id"]) == doc["best"]["experiment_id"]
        assert version["portable"], "the job's checkpoint was uploaded to GridFS"
    shown = CliRunner().invoke(cli, ["sweep", "show", "s1", "--json"], env=job_settings.to_env())
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["best"]["number"] == doc["best"]["number"]
    client = redis_client(job_settings.redis_url)
    pickled = [key for key, value in _values(client) if value.startswith(PICKLE_HEADERS)]
    assert not pickled, f"pickle in Redis under {pickled[:5]}"
