"""Fixtures of the CLI message tests: environments whose servers are down or refuse the login."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_testlib import PASSWORD, USER, WRONG

from services.connections import mongo_client
from services.local import free_port, start_mongo, start_redis, stop_process


def _closed_port_settings(settings):
    """``settings`` whose Redis and MongoDB addresses are ports nothing listens on."""
    return settings.with_overrides(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        mongo_uri=f"mongodb://127.0.0.1:{free_port()}/",
        mongo_timeout_s=0.5,
    )


@pytest.fixture
def down_settings(settings):
    """Settings of this test (data directory, ...) with both servers down."""
    return _closed_port_settings(settings)


@pytest.fixture(scope="module")
def auth_servers(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A redis-server and a secantusdb server of this module's own that require a login, and
    their URIs with the wrong password: ``{"redis": url, "mongodb": uri}``."""
    tmp = tmp_path_factory.mktemp("auth-servers")
    redis = start_redis(free_port(), tmp / "redis", password=PASSWORD)
    port = free_port()
    first = start_mongo(port, tmp / "mongo")
    client = mongo_client(first.uri)
    try:
        client.admin.command("createUser", USER, pwd=PASSWORD, roles=["root"])
    finally:
        client.close()
        stop_process(first.pid)
    mongo = start_mongo(port, tmp / "mongo", credentials=(USER, PASSWORD))
    try:
        yield {
            "redis": redis.uri.replace(PASSWORD, WRONG),
            "mongodb": mongo.uri.replace(PASSWORD, WRONG),
        }
    finally:
        stop_process(redis.pid)
        stop_process(mongo.pid)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def auth_settings(settings, auth_servers):
    """Settings of this test with both servers refusing the (wrong) password."""
    return settings.with_overrides(
        redis_url=auth_servers["redis"], mongo_uri=auth_servers["mongodb"], mongo_timeout_s=2.0
    )


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    """Paths of bad input files: absent, empty, not HDF5, a file where a directory is needed."""
    files = {
        "missing": tmp_path / "absent" / "nothing.h5",
        "not_h5": tmp_path / "not_hdf5.h5",
        "a_file": tmp_path / "a_file",
        "empty_dir": tmp_path / "empty_dir",
        "bad_yaml": tmp_path / "space.yaml",
        "not_sqlite": tmp_path / "runs.db",
    }
    files["not_h5"].write_text("this is not an HDF5 file\n")
    files["a_file"].write_text("x\n")
    files["empty_dir"].mkdir()
    files["bad_yaml"].write_text("params: [unclosed\n")
    files["not_sqlite"].write_text("not sqlite\n")
    return files
