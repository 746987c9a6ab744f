"""Shared fixtures and helpers of the tracking tests (imported by each tests/test_tracking_*.py).

A Tracker on the test's private database and a direct pymongo handle on that database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.connections import mongo_client
from tracking import Tracker

# CI has a copy of shared/ beside the clone: <repo>/../shared/fixtures.
SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture
def tracker(settings) -> Iterator[Tracker]:
    t = Tracker(settings)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def db(settings):
    """The test's private database, read directly with pymongo (not through the tracker)."""
    client = mongo_client(settings.mongo_uri)
    try:
        yield client[settings.mongo_db]
    finally:
        client.close()


def start_example_run(tracker: Tracker, name: str = "eegnex-test", challenge: int = 2, **kwargs):
    """A run with typical EEG2025 arguments (code given, so no git call)."""
    args = {
        "model": {"name": "EEGNeX", "architecture": "EEGNeX", "parameters": 62_000},
        "config": {"batch_size": 64, "learning_rate": 0.002, "optimizer": "Adamax"},
        "data": {"files": ["challenge2_R1.h5"], "releases": ["R1"],
                 "splits": {"train": {"windows": 600, "subjects": 10}}},
        "features": {"feature_service": "eeg_inputs_v1", "snapshot_id": "abc123"},
        "code": {"commit": "0" * 40, "dirty": False},
    }  # fmt: skip
    args.update(kwargs)
    return tracker.start_run(name, challenge, **args)
