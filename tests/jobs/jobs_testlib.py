"""Helpers of the job-queue tests (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from services.settings import Settings

REPO = Path(__file__).resolve().parents[2]
#: Heartbeat interval of test workers (s): short, but long enough for a loaded 2-core machine.
TEST_HEARTBEAT_S = 2.0


@dataclass(frozen=True)
class JobsEnv:
    """The session's small demo data (trainings use ``--features none``: a job test checks the
    queue, not the feature store, and each training process costs seconds on 2 shared cores)."""

    demo: object

    @property
    def c2_files(self) -> list[str]:
        return [str(p) for p in sorted(self.demo.challenge2.values())]


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment of an ``eegfs`` process that uses exactly ``settings`` (one torch thread)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EEGFS_JOB")}
    env.update(settings.to_env())
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


class Workers:
    """Starts ``eegfs worker`` processes; stops every one of them (and their children) at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, settings: Settings, queue: str, *extra: str, name: str | None = None):
        index = len(self.procs)
        log = open(self.tmp_path / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed with the process
        args = [sys.executable, "-m", "eegfs", "--log-level", "INFO", "worker", "--queue", queue]
        args += ["--name", name or f"w{index}-{uuid.uuid4().hex[:4]}", *extra]
        proc = subprocess.Popen(
            args, env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        proc.log_path = self.tmp_path / f"worker-{index}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def descendants(self, proc: subprocess.Popen) -> list[psutil.Process]:
        try:
            return psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop_all(self) -> None:
        """A warm shutdown (SIGTERM: RQ stops once idle); what is left after 10 s is killed."""
        families = {proc.pid: self.descendants(proc) for proc in self.procs}
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            for child in families[proc.pid]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGCONT)
                    child.kill()
            # Shown by pytest when the test failed: what each worker did.
            text = proc.log_path.read_text(errors="replace").splitlines()  # type: ignore[attr-defined]
            print(f"--- {proc.log_path} (last 40 lines) ---", *text[-40:], sep="\n")


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (returned), else fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def train_args(env: JobsEnv, *extra: str, epochs: int = 2) -> list[str]:
    """Arguments of a tiny, one-thread Challenge 2 training job on the demo data."""
    options = {"--challenge": "2", "--epochs": str(epochs), "--workers": "0", "--batch-size": "16"}
    args = [word for pair in options.items() for word in pair]
    return [*args, "--features", "none", "--data", *env.c2_files, *extra]
