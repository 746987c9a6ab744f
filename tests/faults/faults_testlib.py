"""Helpers of the fault-injection tests (fixtures live in conftest.py next to this file)."""

from __future__ import annotations

import os
import signal
import time

import psutil

from tracking import Tracker


def sigkill(pid: int) -> None:
    """Kill ``pid`` with SIGKILL (no chance to flush or close anything) and wait until it is gone."""
    try:
        process = psutil.Process(pid)
        os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
    except psutil.NoSuchProcess:
        pass


def start_example_run(tracker: Tracker, name: str = "eegnex-fault", **kwargs):
    """A run with typical EEG2025 arguments (code given, so no git call)."""
    args = {
        "model": {"name": "EEGNeX", "architecture": "EEGNeX", "parameters": 62_000},
        "config": {"batch_size": 64, "learning_rate": 0.002, "optimizer": "Adamax"},
        "data": {"files": ["challenge2_R1.h5"], "releases": ["R1"]},
        "features": {"feature_service": "eeg_inputs_v1", "snapshot_id": "abc123"},
        "code": {"commit": "0" * 40, "dirty": False},
    }
    args.update(kwargs)
    return tracker.start_run(name, 2, **args)


def wait_synced(tracker: Tracker, deadline_s: float = 90.0) -> bool:
    """Wait for the tracker's automatic replay (a deadline, not a timing assertion)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if tracker.flush(timeout_s=10):
            return True
        time.sleep(0.2)
    return False
