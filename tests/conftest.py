"""Session-scoped real servers for every test, and per-test isolation.

Two layers, as in pytest-redis / pytest-mongo:

* session fixtures ``redis_server_url`` / ``mongo_server_uri`` reuse a server that already answers
  (REDIS_URL / MONGO_URI, or the default addresses) and otherwise start one on a free port with a
  temporary data directory, stopped at the end of the session. A test never skips for a missing
  server.
* function fixtures isolate each test: ``redis_url`` is a dedicated Redis database number
  (FLUSHDB before and after, never FLUSHALL), ``mongo_db_name`` a database of its own, dropped
  afterwards; ``settings`` bundles both with a temporary data directory.

Factories ``start_local_redis`` / ``start_local_mongo`` give a test a private server it may stop
and restart (outage tests).
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.connections import mongo_client, redis_client, redis_url_with_db
from services.local import (
    LocalServer,
    free_port,
    ping_mongo,
    ping_redis,
    start_mongo,
    start_redis,
    stop_process,
)
from services.settings import Settings, load_settings

# Redis databases the tests may FLUSHDB, one per test in turn. Database 0 is never touched.
TEST_REDIS_DBS = tuple(range(8, 16))
_redis_db_cycle = itertools.cycle(TEST_REDIS_DBS)


@contextmanager
def _local_server(start, tmp_dir: Path) -> Iterator[LocalServer]:
    server = start(free_port(), tmp_dir)
    try:
        yield server
    finally:
        stop_process(server.pid)


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory) -> Iterator[str]:
    """Base URL (database 0) of a Redis server for this test session."""
    configured = load_settings().redis_url
    if ping_redis(configured) is not None:
        yield configured
        return
    with _local_server(start_redis, tmp_path_factory.mktemp("redis")) as server:
        yield server.uri


@pytest.fixture(scope="session")
def mongo_server_uri(tmp_path_factory) -> Iterator[str]:
    """URI of a MongoDB-wire server for this test session."""
    configured = load_settings().mongo_uri
    if ping_mongo(configured) is not None:
        yield configured
        return
    with _local_server(start_mongo, tmp_path_factory.mktemp("mongodb")) as server:
        yield server.uri


@pytest.fixture
def redis_url(redis_server_url) -> Iterator[str]:
    """A Redis URL on a database of this test's own, empty at the start and flushed at the end."""
    url = redis_url_with_db(redis_server_url, next(_redis_db_cycle))
    client = redis_client(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def mongo_uri(mongo_server_uri) -> str:
    return mongo_server_uri


@pytest.fixture
def mongo_db_name(request, mongo_server_uri) -> Iterator[str]:
    """Name of a MongoDB database of this test's own, dropped at the end."""
    slug = re.sub(r"[^A-Za-z0-9]", "_", request.node.name)[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        client = mongo_client(mongo_server_uri)
        try:
            client.drop_database(name)
        finally:
            client.close()


@pytest.fixture
def settings(tmp_path, redis_url, mongo_server_uri, mongo_db_name) -> Settings:
    """Settings pointing at this test's Redis database, Mongo database and a temp data dir."""
    return Settings(
        redis_url=redis_url,
        mongo_uri=mongo_server_uri,
        mongo_db=mongo_db_name,
        data_dir=tmp_path / "data",
        feature_repo=Path(__file__).resolve().parents[1] / "feature_repo",
        redis_source="configured",
        mongo_source="configured",
    )


@pytest.fixture
def start_local_redis(tmp_path) -> Iterator:
    """Factory: start a private redis-server (stopped at teardown if still running)."""
    started: list[LocalServer] = []

    def start(port: int | None = None) -> LocalServer:
        server = start_redis(port or free_port(), tmp_path / f"redis-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.pid)


@pytest.fixture
def start_local_mongo(tmp_path) -> Iterator:
    """Factory: start a private secantusdb server; ``start(port, workdir)`` restarts on old data."""
    started: list[LocalServer] = []

    def start(port: int | None = None, workdir: Path | None = None) -> LocalServer:
        server = start_mongo(port or free_port(), workdir or tmp_path / f"mongo-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.pid)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A small EEG2025-like demo dataset (both layouts, two releases), written once per session."""
    from pipelines.demo_data import write_demo_data

    return write_demo_data(
        tmp_path_factory.mktemp("demo"),
        seed=7,
        subjects_per_release=6,
        c2_windows_per_subject=6,
        c1_windows_per_subject=8,
        progress=False,
    )
