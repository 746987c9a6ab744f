"""Fixtures of the fault-injection suite (tests/faults/): servers the tests crash on purpose.

Every test here breaks something real (a server SIGKILLed, a process killed mid-write, a server
stopped across a run) and checks a promise the README's "Reliability" section lists. Servers
come from ``start_local_mongo`` (tests/conftest.py): private to the test, so killing them
touches nothing else; ``start_local_mongo(port=server.port, workdir=server.data_dir)`` restarts
one on its own data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from faults_testlib import sigkill

from services.connections import mongo_client
from services.local import LocalServer


@pytest.fixture
def crash_mongo(start_local_mongo) -> Callable[[LocalServer], LocalServer]:
    """``crash_mongo(server)``: SIGKILL the MongoDB server, restart it on the same port and data."""

    def crash(server: LocalServer) -> LocalServer:
        sigkill(server.pid)
        restarted = start_local_mongo(port=server.port, workdir=server.data_dir)
        assert restarted.uri == server.uri
        return restarted

    return crash


@pytest.fixture
def db(settings) -> Iterator:
    """The test's private database on the session's server, read directly with pymongo."""
    client = mongo_client(settings.mongo_uri)
    try:
        yield client[settings.mongo_db]
    finally:
        client.close()
