"""Workers, job queue and sweeps (Services and Compare pages) and the build's data-quality report
(Features page) against the real test servers."""

from __future__ import annotations

import dataclasses
import shutil
import time

import h5py
import pytest

from dashboard import features, work
from jobs.heartbeats import Heartbeat
from jobs.keys import JobKeys
from jobs.queue import JobQueue
from jobs.sweeps import create_sweep, load_study
from pipelines.build import BuildOptions, build_features
from services.connections import redis_client


@pytest.fixture
def work_env(settings):
    """Settings with a key prefix of this test's own, and a Redis client."""
    env = dataclasses.replace(settings, jobs_prefix=f"eegfs-dash-{time.time_ns()}")
    client = redis_client(env.redis_url)
    try:
        yield env, client
    finally:
        client.close()


def test_workers_live_and_lost(work_env):
    env, client = work_env
    keys = JobKeys(env.jobs_prefix)
    assert work.workers_frame(client, env).empty
    Heartbeat(client, keys, name="gpu-box-1", queue="gpu", heartbeat_s=60).beat()
    lost = Heartbeat(client, keys, name="cpu-box-2", queue="default", heartbeat_s=0.2)
    lost.beat()
    time.sleep(0.5)  # its heartbeat key expires: the worker is lost
    frame = work.workers_frame(client, env)
    assert frame[["name", "state", "queue"]].values.tolist() == [
        ["gpu-box-1", "live", "gpu"],
        ["cpu-box-2", "lost", "default"],
    ]


def test_jobs_newest_first_with_state_counts_and_nothing_written(work_env):
    env, client = work_env
    with JobQueue(env, client=client) as queue:
        first = queue.submit("noop", [], queue="dash-test")
        second = queue.submit("noop", [], queue="dash-test")
        queue.cancel(first)
    frame = work.jobs_frame(client, env)
    assert frame["id"].tolist() == [second, first]
    assert work.job_state_counts(frame) == {"queued": 1, "canceled": 1}
    assert work.jobs_frame(client, env, state="canceled")["id"].tolist() == [first]
    keys = JobKeys(env.jobs_prefix)
    client.delete(keys.job(first))  # past its retention: only its index entry is left
    assert work.jobs_frame(client, env)["id"].tolist() == [second]
    assert client.zscore(keys.jobs, first) is not None  # the dashboard did not prune it


def test_sweep_summary_lists_trials_with_parameters_and_the_best(work_env, tmp_path):
    env, client = work_env
    space = tmp_path / "space.yaml"
    space.write_text(
        "train:\n  epochs: 1\nparams:\n  lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
    )
    assert work.sweep_names(client, env) == []
    config = create_sweep(
        env, "dash-sweep", challenge=2, space_path=space, trials=3, queue="dash-test", client=client
    )
    study = load_study(env, client, config)
    for value in (0.9, 0.7):
        trial = study.ask()
        trial.suggest_float("lr", 0.001, 0.1, log=True)
        study.tell(trial, value)
    summary = work.sweep_summary(client, env, "dash-sweep")
    assert work.sweep_names(client, env) == ["dash-sweep"]
    assert summary["counts"] == {"complete": 2}
    assert summary["best"]["value"] == pytest.approx(0.7) and summary["best"]["number"] == 1
    assert summary["trials"]["value"].tolist() == pytest.approx([0.9, 0.7])
    assert "param:lr" in summary["trials"].columns


def test_build_quality_of_a_clean_build_and_of_a_flat_file(small_demo, tmp_path):
    assert features.build_quality(tmp_path / "no-build") is None
    fdir = tmp_path / "features"
    c2 = sorted(small_demo.challenge2.values())[0]
    build_features(fdir, [c2], small_demo.participants, BuildOptions(progress=False))
    clean = features.build_quality(fdir)
    assert clean["n_held_back"] == 0 and clean["rejected"].empty
    assert clean["inputs"]["input"].tolist() == [c2.name]
    flat = tmp_path / "flat" / c2.name
    flat.parent.mkdir()
    shutil.copy(c2, flat)
    with h5py.File(flat, "r+") as f:
        f["data"][...] = 0.0
    build_features(tmp_path / "flat-features", [flat], small_demo.participants, BuildOptions())
    report = features.build_quality(tmp_path / "flat-features")
    rejected = report["rejected"]
    assert report["n_held_back"] == len(rejected) > 0
    assert set(rejected["decision"]) == {"held back"}
    assert rejected["reasons"].str.len().min() > 0
