"""Fixtures of the job-queue tests: real Redis, the MongoDB-wire server, real worker processes.

Each test gets its own Redis database, MongoDB database, data directory, job-key prefix and RQ
queue name, so tests never see each other's jobs; workers are ``python -m eegfs worker``
processes that the ``workers`` factory starts and always stops (with their children). Helpers
live in jobs_testlib.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from jobs_testlib import TEST_HEARTBEAT_S, JobsEnv, Workers

from services.settings import Settings


@pytest.fixture
def jobs_env(small_demo) -> JobsEnv:
    return JobsEnv(demo=small_demo)


@pytest.fixture
def job_settings(settings) -> Settings:
    """This test's Redis database, MongoDB database and data directory; its own key prefix."""
    return settings.with_overrides(
        jobs_prefix=f"t{uuid.uuid4().hex[:10]}", heartbeat_s=TEST_HEARTBEAT_S
    )


@pytest.fixture
def queue_name() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workers(tmp_path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()
