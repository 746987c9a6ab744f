"""Fixtures of the tracking tests: a Tracker and a direct pymongo handle on the test's database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.connections import mongo_client
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
