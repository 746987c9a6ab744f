"""Pins of the RQ and Optuna behaviour that jobs.rq_adapter and jobs.optuna_adapter rely on."""

from __future__ import annotations

import inspect
import json
import zlib

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages.journal._base import BaseJournalSnapshot
from rq.registry import StartedJobRegistry

from jobs import rq_adapter
from jobs.optuna_adapter import RedisJsonJournal, journal_storage, open_trial
from jobs.queue import JobQueue
from services.connections import redis_client


def test_rq_jobs_are_plain_json(job_settings):
    with JobQueue(job_settings) as queue:
        job_id = queue.submit("spin", ["5"])
        raw = queue.client.hget(f"rq:job:{job_id}", "data")
    func, _instance, args, kwargs = json.loads(zlib.decompress(raw))
    assert func == rq_adapter.JOB_FUNCTION == "jobs.tasks.execute"
    assert args == [{"command": "spin", "args": ["5"]}] and kwargs == {}


def test_requeue_takes_a_started_job_out_of_the_started_registry(job_settings, queue_name):
    with JobQueue(job_settings) as queue:
        job_id = queue.submit("noop", queue=queue_name)
        client = queue.client
    rq_queue = rq_adapter.make_queue(client, queue_name)
    job, _ = rq_queue.dequeue_any(
        [rq_queue], None, connection=client, serializer=rq_adapter.SERIALIZER
    )
    worker = rq_adapter.Worker([rq_queue], connection=client, serializer=rq_adapter.SERIALIZER)
    worker.prepare_execution(job)
    started = StartedJobRegistry(queue_name, client, serializer=rq_adapter.SERIALIZER)
    assert job_id in started.get_job_ids(cleanup=False)
    assert rq_adapter.requeue(client, job_id)
    assert job_id not in started.get_job_ids(cleanup=False)
    assert rq_queue.get_job_ids() == [job_id]
    assert rq_adapter.statuses(client, [job_id]) == {job_id: "queued"}
    rq_adapter.drop_dequeued(rq_queue, job_id)  # the intermediate list has its remove()


def test_rq_worker_internals_used(job_settings, queue_name):
    client = redis_client(job_settings.redis_url)
    worker = rq_adapter.Worker(
        [rq_adapter.make_queue(client, queue_name)],
        connection=client,
        serializer=rq_adapter.SERIALIZER,
    )
    assert not rq_adapter.stop_requested(worker)
    assert not rq_adapter.stop_requested_for(worker, "x")
    worker._stopped_job_id = "x"
    assert rq_adapter.stop_requested_for(worker, "x")
    # Why the work horse needs PR_SET_PDEATHSIG: RQ puts it in a process group of its own.
    assert "os.setpgrp()" in inspect.getsource(rq_adapter.Worker.fork_work_horse)


def test_optuna_journal_is_json_only_and_trials_open_in_another_process(redis_url):
    client = redis_client(redis_url)
    assert not isinstance(RedisJsonJournal(client, "k"), BaseJournalSnapshot)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(
        study_name="s", storage=journal_storage(client, "p:j"), pruner=pruner
    )
    space = {"x": FloatDistribution(0.0, 1.0)}
    first = study.ask(space)
    first.report(1.0, 0)
    study.tell(first, 1.0)
    second = study.ask(space)
    elsewhere = optuna.load_study(
        study_name="s", storage=journal_storage(client, "p:j"), pruner=pruner
    )
    trial = open_trial(elsewhere, second.number)
    trial.set_user_attr("experiment_id", "e1")
    trial.report(5.0, 0)
    assert trial.should_prune()
    reloaded = study.get_trials(deepcopy=False)[second.number]
    assert reloaded.intermediate_values == {0: 5.0}
    assert reloaded.user_attrs == {"experiment_id": "e1"}
    assert [k.decode() for k in client.scan_iter()] == ["p:j"]
    assert all(isinstance(json.loads(entry), dict) for entry in client.lrange("p:j", 0, -1))
