"""The worker's main process when Redis goes away and comes back, run in this process (the
worker tests run it as a subprocess; these pin the reconnection code paths one by one)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from jobs import rq_adapter
from jobs.fence import Fence
from jobs.heartbeats import Heartbeat, list_workers
from jobs.keys import JobKeys
from jobs.recovery import Recovery
from jobs.worker import (
    FencedWorker,
    _last_line,
    _patiently,
    _Ticker,
    _wait_for_redis,
    run_worker,
)
from services.connections import redis_client
from services.local import free_port, stop_process


def _restart_later(start, port: int, workdir, delay_s: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), start(port, workdir)))
    thread.start()
    return thread


def test_patiently_rides_out_a_redis_restart(start_local_redis, tmp_path):
    server = start_local_redis()
    client = redis_client(server.uri)
    client.set("k", "v")
    stop_process(server.pid)
    thread = _restart_later(start_local_redis, server.port, server.data_dir, 1.5)
    try:
        assert _patiently(lambda: client.get("k"), patience_s=30) == b"v"
    finally:
        thread.join()


def test_patiently_gives_up_after_its_patience():
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        _patiently(client.ping, patience_s=0.0)


def test_waiting_for_redis_is_said_once_with_the_password_masked(start_local_redis, tmp_path):
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    said: list[str] = []
    thread = _restart_later(
        lambda p, w: start_local_redis(p, w, password="s3cret"), port, tmp_path / "r", 2.5
    )
    try:
        _wait_for_redis(redis_client(url), url, said.append)
    finally:
        thread.join()
    assert len(said) == 1 and said[0].startswith(
        f"waiting for Redis at redis://:***@127.0.0.1:{port}"
    )
    assert "s3cret" not in said[0]


def test_heartbeat_tick_outlives_redis_and_beats_again_when_it_is_back(start_local_redis, settings):
    server = start_local_redis()
    client = redis_client(server.uri)
    keys = JobKeys(f"t{uuid.uuid4().hex[:8]}")
    beat = Heartbeat(client, keys, name="w1", queue="q", heartbeat_s=5.0)
    worker = FencedWorker(
        [rq_adapter.make_queue(client, "q")],
        name="w1",
        connection=client,
        serializer=rq_adapter.SERIALIZER,
        settings=settings,
        heartbeat=beat,
        fence=Fence(client, keys, retention_s=60),
    )
    cfg = settings.with_overrides(redis_url=server.uri, jobs_prefix=keys.prefix)
    recovery = Recovery(cfg, client, Fence(client, keys, retention_s=60))
    ticker = _Ticker(worker, recovery, 1.0, threading.Event())
    ticker.tick()
    assert [w.name for w in list_workers(client, keys)] == ["w1"]
    stop_process(server.pid)
    ticker.tick()  # Redis is gone: logged, not raised; the sweep waits a full interval after
    assert recovery._connected_since is None
    start_local_redis(server.port, server.data_dir)
    client.delete(keys.worker("w1"))
    ticker.tick()
    assert client.exists(keys.worker("w1")) == 1


def test_run_worker_refuses_a_max_jobs_below_one(settings):
    with pytest.raises(ValueError, match="--max-jobs must be >= 1, got 0"):
        run_worker(settings, max_jobs=0)


def test_failure_reason_is_the_last_line_of_the_traceback():
    assert _last_line("Traceback ...\n  File x\nValueError: bad\n\n") == "ValueError: bad"
    assert _last_line("") == "the job failed"
