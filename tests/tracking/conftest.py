"""Fixtures of the tracking tests: a Tracker, a direct pymongo handle on the test's database and
a standalone (not replica-set) MongoDB-wire server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from services.connections import mongo_client
from services.local import free_port, ping_mongo, stop_process
from tracking import Tracker


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


@pytest.fixture
def standalone_mongo_uri(tmp_path) -> Iterator[str]:
    """URI of a private secantusdb run as a *standalone* server (no replica set, no transactions).

    The session's server is a one-node replica set, like docker-compose's MongoDB; this one is
    what a plain ``mongod`` without ``--replSet`` looks like to a client.
    """
    port = free_port()
    workdir = tmp_path / "standalone-mongo"
    workdir.mkdir()
    command = [sys.executable, "-m", "secantus", "--standalone", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--storage-path", str(workdir / "db")]
    with open(workdir / "mongodb.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    uri = f"mongodb://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while ping_mongo(uri, timeout_ms=500) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (workdir / "mongodb.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"standalone secantusdb did not start:\n{log_text}")
            time.sleep(0.1)
        yield uri
    finally:
        stop_process(process.pid)
