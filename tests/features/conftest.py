"""Fixtures of the feature tests (helpers live in features_testlib.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.local import free_port, start_redis, stop_process


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory) -> Iterator[str]:
    """A redis-server of this module's own, for a Feast store shared by the module's tests."""
    server = start_redis(free_port(), tmp_path_factory.mktemp("feature-redis"))
    try:
        yield server.uri
    finally:
        stop_process(server.pid)
