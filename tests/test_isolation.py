"""The test suite never touches the servers a user's environment or ``.env`` configures.

Two pytest sessions run at the same time against a "user" Redis and MongoDB (servers this test
starts and fills with sentinel data): one finds them in a ``.env`` in its working directory, the
other in its environment. Both must pass, and every sentinel must still be there afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.connections import mongo_client, redis_client, redis_url_with_db

REPO = Path(__file__).resolve().parents[1]

# Tests that flush Redis databases, create and drop MongoDB databases, and run CLI commands that
# read the settings (a `.env` included) without being told every address.
INNER_TESTS = (
    "tests/training/test_training_live.py::test_messages_are_json_on_the_channel_and_state_is_kept",
    "tests/tracking/test_tracking_backup_cli.py::test_cli_errors_are_one_clear_line",
    "tests/tracking/test_tracking_queries.py",
    "tests/test_services.py::test_doctor_cli_prints_fix_and_exits_1",
    "tests/test_services.py::test_settings_defaults_without_environment",
)
SENTINEL_DBS = (0, *range(8, 16))


def _fill_sentinels(redis_url: str, mongo_uri: str) -> None:
    for db in SENTINEL_DBS:
        client = redis_client(redis_url_with_db(redis_url, db))
        client.set("lab:sentinel", f"keep-{db}")
        client.close()
    client = mongo_client(mongo_uri)
    client["eeg2025"]["experiments"].insert_one({"name": "a lab run", "sentinel": True})
    client.close()


def _sentinels_left(redis_url: str, mongo_uri: str) -> tuple[dict[int, str | None], list, int]:
    found = {}
    for db in SENTINEL_DBS:
        client = redis_client(redis_url_with_db(redis_url, db))
        value = client.get("lab:sentinel")
        found[db] = value.decode() if value is not None else None
        client.close()
    client = mongo_client(mongo_uri)
    names = sorted(n for n in client.list_database_names() if n not in ("admin", "config", "local"))
    runs = client["eeg2025"]["experiments"].count_documents({"sentinel": True})
    client.close()
    return found, names, runs


def _pytest(cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml")]
    command += [str(REPO / t) for t in INNER_TESTS]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_tests_leave_configured_servers_alone(tmp_path, start_local_redis, start_local_mongo):
    user_redis, user_mongo = start_local_redis(), start_local_mongo()
    _fill_sentinels(user_redis.uri, user_mongo.uri)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("EEGFS_")}
    dotenv_dir = tmp_path / "checkout-with-dotenv"
    dotenv_dir.mkdir()
    (dotenv_dir / ".env").write_text(f"REDIS_URL={user_redis.uri}\nMONGO_URI={user_mongo.uri}\n")
    from_environment = {**base_env, "REDIS_URL": user_redis.uri, "MONGO_URI": user_mongo.uri}
    runs = [_pytest(dotenv_dir, base_env), _pytest(REPO, from_environment)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert " passed" in output

    found, databases, lab_runs = _sentinels_left(user_redis.uri, user_mongo.uri)
    assert found == {db: f"keep-{db}" for db in SENTINEL_DBS}
    assert databases == ["eeg2025"] and lab_runs == 1
