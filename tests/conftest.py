"""Session-scoped real servers for every test, and per-test isolation.

The tests never touch a server that the user's environment or ``.env`` configures:

* At start-up :func:`pytest_configure` removes every setting the project reads (``REDIS_URL``,
  ``MONGO_URI``, ``EEGFS_*``) from the process environment, turns off ``.env`` reading
  (``EEGFS_ENV_FILE=``), points the data directory at a temporary one and the default server
  ports at ports nothing listens on. Code that forgets to take the test's settings fails to
  connect instead of reaching a real server.
* Session fixtures ``redis_server_url`` / ``mongo_server_uri`` start a redis-server and a
  MongoDB-wire server (secantusdb) of this session's own, on free ports, with data in a temporary
  directory, and stop them at the end. ``EEGFS_TEST_REDIS_URL`` / ``EEGFS_TEST_MONGO_URI`` opt in
  to other servers explicitly (their Redis databases 8-15 are flushed by the tests). A test never
  skips for a missing server.
* Function fixtures isolate each test: ``redis_url`` is a Redis database of its own (FLUSHDB
  before and after, never FLUSHALL), ``mongo_db_name`` a MongoDB database of its own, dropped
  afterwards; ``settings`` bundles both with a temporary data directory.

Factories ``start_local_redis`` / ``start_local_mongo`` give a test private servers that it may
kill and restart (fault tests kill only those).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
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
from services.settings import ENV_FILE_KEY, ENV_KEYS, Settings

#: Explicit opt-in to servers the tests did not start (never read from ``.env``).
TEST_REDIS_URL_KEY = "EEGFS_TEST_REDIS_URL"
TEST_MONGO_URI_KEY = "EEGFS_TEST_MONGO_URI"

# Redis databases the tests may FLUSHDB, one per test in turn. Database 0 is never touched.
TEST_REDIS_DBS = tuple(range(8, 16))
_redis_db_cycle = itertools.cycle(TEST_REDIS_DBS)

REPO = Path(__file__).resolve().parents[1]
FEATURE_REPO = REPO / "feature_repo"

_scratch_dir: str | None = None


def isolate_environment(environ: os._Environ | dict, scratch: str) -> None:
    """Remove the user's settings from ``environ`` so nothing can reach a configured server."""
    for key in ENV_KEYS:
        environ.pop(key, None)
    environ[ENV_FILE_KEY] = ""  # no .env, wherever a test runs
    environ["EEGFS_DATA_DIR"] = str(Path(scratch) / "data")
    # Default addresses point at ports nothing listens on (not at a user's localhost servers).
    environ["EEGFS_REDIS_PORT"] = str(free_port())
    environ["EEGFS_MONGO_PORT"] = str(free_port())


def pytest_configure(config) -> None:
    global _scratch_dir
    _scratch_dir = tempfile.mkdtemp(prefix="eegfs-tests-")
    isolate_environment(os.environ, _scratch_dir)


def pytest_unconfigure(config) -> None:
    if _scratch_dir is not None:
        shutil.rmtree(_scratch_dir, ignore_errors=True)


@contextmanager
def _local_server(start, tmp_dir: Path) -> Iterator[LocalServer]:
    server = start(free_port(), tmp_dir)
    try:
        yield server
    finally:
        stop_process(server.pid)


def _opted_in(key: str, ping) -> str | None:
    url = os.environ.get(key)
    if not url:
        return None
    if ping(url) is None:
        pytest.fail(f"{key} is set but that server does not answer; unset it to use own servers")
    return url


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory) -> Iterator[str]:
    """Base URL (database 0) of this session's own Redis server (or ``EEGFS_TEST_REDIS_URL``)."""
    opted = _opted_in(TEST_REDIS_URL_KEY, ping_redis)
    if opted is not None:
        yield opted
        return
    with _local_server(start_redis, tmp_path_factory.mktemp("redis")) as server:
        yield server.uri


@pytest.fixture(scope="session")
def mongo_server_uri(tmp_path_factory) -> Iterator[str]:
    """URI of this session's own MongoDB-wire server (or ``EEGFS_TEST_MONGO_URI``)."""
    opted = _opted_in(TEST_MONGO_URI_KEY, ping_mongo)
    if opted is not None:
        yield opted
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
        feature_repo=FEATURE_REPO,
        redis_source="configured",
        mongo_source="configured",
    )


@pytest.fixture
def cli_env(settings) -> dict[str, str]:
    """Environment for the ``eegfs`` CLI that points at this test's servers and data directory."""
    return settings.to_env()


def make_clean_repo(path: Path) -> Path:
    """A git repository at ``path`` with one commit and no changes (a run identity exists)."""
    path.mkdir()
    (path / "code.py").write_text("print('v1')\n")
    for args in (
        ["init", "-q"],
        ["add", "code.py"],
        ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "v1"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)
    return path


@pytest.fixture
def clean_repo(tmp_path, monkeypatch) -> Path:
    """A clean one-commit git repository (:func:`make_clean_repo`) as the working directory."""
    repo = make_clean_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture(scope="session")
def clean_repo_at():
    """``clean_repo_at(path)``: :func:`make_clean_repo` for tests that need it elsewhere."""
    return make_clean_repo


@pytest.fixture
def start_local_redis(tmp_path) -> Iterator:
    """Factory: start a private redis-server (stopped at teardown if still running);
    ``start(password=...)`` makes it require that password (its ``uri`` carries it)."""
    started: list[LocalServer] = []

    def start(
        port: int | None = None, workdir: Path | None = None, *, password: str | None = None
    ) -> LocalServer:
        server = start_redis(
            port or free_port(), workdir or tmp_path / f"redis-{len(started)}", password=password
        )
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
    from demodata.writer import write_demo_data

    return write_demo_data(
        tmp_path_factory.mktemp("demo"),
        seed=7,
        subjects_per_release=6,
        c2_windows_per_subject=6,
        c1_windows_per_subject=8,
        progress=False,
    )


@contextmanager
def _materialized_store(demo, workdir: Path) -> Iterator[Settings]:
    """A feature store over ``demo`` built, applied and materialized into a private redis-server
    (so materialization never touches the shared test Redis databases); the server stops at exit.
    Yields settings whose ``redis_url`` and ``data_dir`` are that store's."""
    from featurestore.client import FeatureStoreClient
    from pipelines.build import BuildOptions, build_features

    server = start_redis(free_port(), workdir / "redis")
    try:
        settings = Settings(
            redis_url=server.uri, data_dir=workdir / "data", feature_repo=FEATURE_REPO
        )
        build_features(
            settings.features_dir, demo.files, demo.participants, BuildOptions(progress=False)
        )
        with FeatureStoreClient(settings, cache_size=0) as client:
            client.apply()
            client.materialize()
        yield settings
    finally:
        stop_process(server.pid)


@pytest.fixture(scope="session")
def materialized_store():
    """``with materialized_store(demo, workdir) as settings:`` a built, applied and materialized
    feature store on its own redis-server (see :func:`_materialized_store`)."""
    return _materialized_store
