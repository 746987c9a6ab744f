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


def _victim(queue, jobs, sweep_doc):
    """A trial job training (one epoch reported) after some trial has ended, else None."""
    trials = sweep_doc["trials"]
    if not any(t["state"] in ("complete", "pruned") for t in trials):
        return None
    training = {
        t["number"] for t in trials if t["state"] == "running" and t["epochs_reported"] == 1
    }
    records = [queue.get(j, with_rq=False) for j in jobs]
    return next((r for r in records if r.state == "started" and r.trial in training), None)


def test_sweep_with_a_worker_killed_and_restarted_midway(
    job_settings, queue_name, workers, jobs_env, tmp_path
):
    """Two workers run an 8-trial sweep; one is SIGKILLed mid-trial and started again."""
    config = create_sweep(
        job_settings,
        "s1",
        challenge=2,
        space_path=_space(tmp_path, jobs_env, epochs=4),
        trials=8,
        sampler="random",
        pruner="median",
        pruner_startup_trials=2,
        pruner_warmup_epochs=1,
        seed=0,
        queue=queue_name,
    )
    assert len(config.jobs) == 8
    procs = {name: workers.start(job_settings, queue_name, name=name) for name in ("wa", "wb")}
    with JobQueue(job_settings) as queue:
        victim = wait_for(
            lambda: _victim(queue, config.jobs, show_sweep(job_settings, "s1")),
            400,
            "a trial in training after a first trial ended",
        )
        procs[victim.worker].send_signal(signal.SIGKILL)
        procs[victim.worker].wait(timeout=30)
        workers.start(job_settings, queue_name, name=f"{victim.worker}-restarted")
        wait_for(
            lambda: all(queue.get(j, with_rq=False).state == "finished" for j in config.jobs),
            600,
            "eight trial jobs to finish",
            interval_s=2.0,
        )
        assert queue.get(victim.id, with_rq=False).attempts == 2
        assert len({queue.get(j, with_rq=False).worker for j in config.jobs}) >= 2
    doc = show_sweep(job_settings, "s1")
    lost = [t for t in doc["trials"] if t["state"] == "fail"]
    assert [t["number"] for t in lost] == [victim.trial], "only the killed trial failed"
    retried = [t for t in doc["trials"] if t["retry_of"] == victim.trial]
    assert len(retried) == 1 and retried[0]["params"] == lost[0]["params"]
    states = [t["state"] for t in doc["trials"] if t["state"] != "fail"]
    assert len(states) == 8 and set(states) <= {"complete", "pruned"}, states
    assert states.count("pruned") >= 1, "the median pruner stopped at least one trial"
    with open_database(job_settings, indexes=False) as db:
        for trial in doc["trials"]:
            exp = db[EXPERIMENTS].find_one({"_id": ObjectId(trial["experiment_id"])})
            assert {"sweep:s1", f"trial:{trial['number']}"} <= set(exp["tags"])
            assert exp["job"]["sweep"] == "s1" and exp["job"]["trial"] == trial["number"]
            if trial["state"] == "fail":
                assert exp["status"] == "failed" and exp["error"].startswith("worker lost")
            else:
                pruned = trial["state"] == "pruned"
                expected = ("stopped", "pruned") if pruned else ("completed", None)
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
