"""A work horse is never forked in the middle of a heartbeat tick.

fork() copies the locks other threads hold into the child, where nothing releases them. The tick
imports modules lazily (Optuna, when it fails a lost worker's trial): a horse forked while the
tick was inside such an import blocked forever on its own import of that module (seen once in
CI: a sweep trial that never started). These tests make that moment happen on purpose.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from jobs import rq_adapter
from jobs.fence import Fence
from jobs.heartbeats import Heartbeat
from jobs.keys import JobKeys
from jobs.worker import FencedWorker, _Ticker
from services.connections import redis_client

#: Seconds the probe module's import takes: long enough for the fork to land inside it.
IMPORT_S = 1.0
#: How long the horse may take to import the probe and exit once the tick is over.
HORSE_PATIENCE_S = 15.0


class _ImportingRecovery:
    """A lost-worker sweep that imports a slow module (as the real one imports Optuna)."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.inside_import = threading.Event()

    def sweep(self) -> None:
        self.inside_import.set()
        __import__(self.module)

    def connection_lost(self) -> None:  # pragma: no cover - Redis stays up here
        pass


class _ImportingHorseWorker(FencedWorker):
    """A worker whose horse imports the same module and exits (instead of running the job)."""

    probe_module = ""

    def main_work_horse(self, job, queue) -> None:
        __import__(self.probe_module)
        os._exit(0)


def _wait_for_exit(pid: int, timeout_s: float) -> int | None:
    """The horse's exit status, or None (after killing it) when it is still running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.fixture()
def probe_module(tmp_path, monkeypatch) -> str:
    name = f"slow_import_probe_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(f"import time\n\ntime.sleep({IMPORT_S})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # RQ's fork_work_horse sets these in the forking process: restore them after the test.
    monkeypatch.setenv("RQ_WORKER_ID", "")
    monkeypatch.setenv("RQ_JOB_ID", "")
    return name


def test_a_horse_forked_during_a_tick_waits_for_the_tick(start_local_redis, settings, probe_module):
    client = redis_client(start_local_redis().uri)
    keys = JobKeys(f"t{uuid.uuid4().hex[:8]}")
    queue = rq_adapter.make_queue(client, "q")
    worker = _ImportingHorseWorker(
        [queue],
        name="w1",
        connection=client,
        serializer=rq_adapter.SERIALIZER,
        settings=settings,
        heartbeat=Heartbeat(client, keys, name="w1", queue="q", heartbeat_s=5.0),
        fence=Fence(client, keys, retention_s=60),
    )
    worker.probe_module = probe_module
    recovery = _ImportingRecovery(probe_module)
    ticker = _Ticker(worker, recovery, 1.0, threading.Event())
    job = rq_adapter.enqueue(
        queue, {"command": "noop"}, job_id=uuid.uuid4().hex, description="probe", retention_s=60
    )
    tick = threading.Thread(target=ticker.tick)
    tick.start()
    try:
        assert recovery.inside_import.wait(10), "the tick never reached the sweep"
        time.sleep(IMPORT_S / 5)  # the tick is inside the slow import now
        forked_at = time.monotonic()
        worker.fork_work_horse(job, queue)
        waited_s = time.monotonic() - forked_at
    finally:
        tick.join()
    exit_code = _wait_for_exit(worker.horse_pid, HORSE_PATIENCE_S)
    assert exit_code is not None, (
        "the horse hung on an import the heartbeat thread held when it was forked"
    )
    assert exit_code == 0
    assert waited_s >= IMPORT_S / 2, "the fork did not wait for the tick to end"


def test_a_tick_waits_while_a_horse_is_being_forked(start_local_redis, settings):
    client = redis_client(start_local_redis().uri)
    keys = JobKeys(f"t{uuid.uuid4().hex[:8]}")
    worker = FencedWorker(
        [rq_adapter.make_queue(client, "q")],
        name="w1",
        connection=client,
        serializer=rq_adapter.SERIALIZER,
        settings=settings,
        heartbeat=Heartbeat(client, keys, name="w1", queue="q", heartbeat_s=5.0),
        fence=Fence(client, keys, retention_s=60),
    )
    recovery = _ImportingRecovery("json")
    ticker = _Ticker(worker, recovery, 1.0, threading.Event())
    with worker.fork_lock:  # as fork_work_horse holds it
        tick = threading.Thread(target=ticker.tick)
        tick.start()
        time.sleep(0.3)
        assert not recovery.inside_import.is_set()
    tick.join(10)
    assert recovery.inside_import.is_set()
