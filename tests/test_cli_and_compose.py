"""The CLI as a whole (help, README, console script, the one error handler) and the compose file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from eegfs.cli import cli
from services.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


# --- CLI and packaging ----------------------------------------------------------------------------


def _all_commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*prefix, name))


def test_every_command_has_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "eegfs services up" in result.output
    commands = list(_all_commands(cli))
    assert ("services", "up") in commands and ("doctor",) in commands
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output


def test_readme_documents_every_command():
    readme = (REPO / "README.md").read_text()
    missing = []
    for path in _all_commands(cli):
        command = cli
        for name in path:
            command = command.commands[name]
        if hasattr(command, "commands"):
            continue
        # "eegfs runs list" or, in the reference table, "eegfs runs list` / `show`".
        group, leaf = " ".join(("eegfs", *path[:-1])), path[-1]
        if f"{group} {leaf}" not in readme and not re.search(
            rf"`{re.escape(group)} [a-z-]+`( / `[a-z-]+`)*? / `{re.escape(leaf)}`", readme
        ):
            missing.append(" ".join(("eegfs", *path)))
    assert not missing, f"README.md does not document: {missing}"


def test_console_script_is_installed():
    eegfs = Path(sys.executable).parent / "eegfs"
    result = subprocess.run([str(eegfs), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Commands:" in result.stdout


COMPOSE_PASSWORDS = {
    "REDIS_PASSWORD": "r,e=d@i:s/%0 {}",
    "MONGO_ROOT_USER": "root",
    "MONGO_ROOT_PASSWORD": "ro=ot,pw",
    "MONGO_APP_USER": "eegfs",
    "MONGO_APP_PASSWORD": "app pw",
}
needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (Debian package docker-compose; .ci/run installs it)",
)


def _compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`docker-compose config` of the repository's file, with no .env but the one given here."""
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_PASSWORDS}
    return subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml")]
        + ["--project-directory", str(tmp_path), "config"],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_compose
def test_docker_compose_file_is_valid_and_secure(tmp_path):
    """Validated by Debian's docker-compose 1.29 (no engine needed); `.ci/run` installs it."""
    result = _compose_config(tmp_path, COMPOSE_PASSWORDS)
    assert result.returncode == 0, result.stderr
    import yaml

    config = yaml.safe_load(result.stdout)
    mongo, redis = config["services"]["mongo"], config["services"]["redis"]
    for service in (mongo, redis):
        for port in service["ports"]:
            assert str(port).startswith("127.0.0.1:"), port  # never every interface
    assert mongo["image"] == "mongo:7.0" and "--replSet" in mongo["command"]
    assert "--keyFile" in mongo["command"]  # a replica set with a keyFile runs with auth on
    env = mongo["environment"]
    assert env["MONGO_INITDB_ROOT_USERNAME"] == "root"
    assert env["MONGO_INITDB_ROOT_PASSWORD"] == COMPOSE_PASSWORDS["MONGO_ROOT_PASSWORD"]
    assert env["EEGFS_APP_PASSWORD"] == COMPOSE_PASSWORDS["MONGO_APP_PASSWORD"]
    health = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate" in health and "createUser" in health and "--password" in health
    assert redis["image"] == "redis:7.2"
    assert "--appendonly yes" in " ".join(redis["command"])
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == COMPOSE_PASSWORDS["REDIS_PASSWORD"]
    assert "healthcheck" in redis
    assert {"mongo-data", "mongo-config", "redis-data"} <= set(config["volumes"])
    # Every credential is required (`${VAR:?message}`): no default, no empty value.
    text = "\n".join(
        line
        for line in (REPO / "docker-compose.yml").read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    references = re.findall(r"\$\{(\w*(?:PASSWORD|USER)\w*)([^}]*)\}", text)
    assert references and all(rest.startswith(":?") for _, rest in references), references


@needs_compose
@pytest.mark.parametrize("missing", sorted(COMPOSE_PASSWORDS))
def test_docker_compose_refuses_a_missing_or_empty_password(tmp_path, missing):
    unset = {k: v for k, v in COMPOSE_PASSWORDS.items() if k != missing}
    result = _compose_config(tmp_path, unset)
    assert result.returncode != 0 and missing in result.stderr
    result = _compose_config(tmp_path, {**unset, missing: ""})
    assert result.returncode != 0 and missing in result.stderr


def test_constraints_pin_torch_cpu_and_stay_inside_feast_caps():
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["torch"] == "2.13.0"
    assert int(pins["pandas"].split(".")[0]) < 3
    assert int(pins["numpy"].split(".")[0]) < 3
    assert int(pins["redis"].split(".")[0]) < 8
    assert pins["feast"].startswith("0.67.")


def test_compose_env_adds_missing_credentials_once_and_never_prints_them(tmp_path):
    from urllib.parse import unquote, urlsplit

    from dotenv import dotenv_values

    env_file = tmp_path / ".env"
    env_file.write_text("MONGO_DB=lab\nMONGO_APP_PASSWORD='p@ss w/rd'")  # no final newline
    result = CliRunner().invoke(cli, ["services", "compose-env", "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output
    values = dotenv_values(env_file)
    assert values["MONGO_DB"] == "lab" and values["MONGO_APP_PASSWORD"] == "p@ss w/rd"
    assert len(values["REDIS_PASSWORD"]) >= 24 and values["MONGO_ROOT_USER"] == "root"
    for key in ("REDIS_PASSWORD", "MONGO_ROOT_PASSWORD", "MONGO_APP_PASSWORD"):
        assert values[key] not in result.output
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    redis_url, mongo_uri = urlsplit(values["REDIS_URL"]), urlsplit(values["MONGO_URI"])
    assert unquote(redis_url.password) == values["REDIS_PASSWORD"]
    assert redis_url.hostname == "127.0.0.1" and mongo_uri.hostname == "127.0.0.1"
    assert unquote(mongo_uri.password) == "p@ss w/rd" and "replicaSet=rs0" in mongo_uri.query
    settings = load_settings({}, dotenv_path=env_file)
    assert settings.redis_url == values["REDIS_URL"] and settings.mongo_db == "lab"

    before = env_file.read_text()
    again = CliRunner().invoke(cli, ["services", "compose-env", "--env-file", str(env_file)])
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert env_file.read_text() == before
    if shutil.which("docker-compose"):
        assert _compose_config(tmp_path, {}).returncode == 0  # compose reads the same .env


# --- CLI error handling (eegfs.errors, one handler for every command) ----------------------------


def test_user_error_roots_are_real_classes():
    import importlib

    from eegfs.errors import USER_ERROR_ROOTS, is_user_error

    for name in USER_ERROR_ROOTS:
        module, _, qualname = name.partition(":")
        root = getattr(importlib.import_module(module), qualname)
        assert issubclass(root, Exception)
        assert is_user_error(root("x")) and is_user_error(type("Sub", (root,), {})("x"))
    assert not is_user_error(RuntimeError("a bug"))


@pytest.mark.parametrize(
    ("args", "env", "status", "message"),
    [
        # services: a ServiceError
        (
            ["services", "up"],
            {"REDIS_URL": "redis://127.0.0.1:1/0"},
            1,
            "Error: Redis at redis://127.0.0.1:1/0 (REDIS_URL) does not answer",
        ),
        # features: a PipelineError
        (
            ["features", "build", "--input", "missing.h5", "--participants", "missing.tsv"],
            {},
            1,
            "Error: missing.tsv: no such file; check --participants",
        ),
        # train: a TrackingError (InvalidIdError) from the resume path
        (["train", "--resume", "123"], {}, 1, "Error: experiment id '123' is not a valid"),
        # any command: a ValueError raised by our settings validation is a usage error
        (["services", "status"], {"EEGFS_REDIS_PORT": "99999"}, 2, "Error: EEGFS_REDIS_PORT"),
    ],
)
def test_library_errors_are_one_line_without_traceback(args, env, status, message, tmp_path):
    env = {"EEGFS_DATA_DIR": str(tmp_path), "MONGO_URI": "mongodb://127.0.0.1:1/", **env}
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == status, result.output
    assert result.output.startswith(message), result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_debug_log_level_shows_the_traceback_of_a_user_error(tmp_path):
    # os.environ holds no user setting (conftest removes them) and lets coverage follow the child.
    env = {**os.environ, "EEGFS_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    command = [sys.executable, "-m", "eegfs", "--log-level", "DEBUG", "services", "up"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ServiceError" in result.stderr
    assert result.stderr.rstrip().endswith("run a local one")


def test_unexpected_errors_keep_their_traceback(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text(
        "import json, sys\n"
        "import click\n"
        "from eegfs.errors import HandledGroup\n"
        "from tracking.queries import parse_metric_filter\n"
        "@click.group(cls=HandledGroup)\n"
        "def cli():\n"
        "    pass\n"
        "@cli.command()\n"
        "def bug():\n"
        "    raise RuntimeError('a bug')\n"
        "@cli.command()\n"
        "def foreign():\n"
        "    json.loads('{')  # a ValueError raised inside another library\n"
        "@cli.command()\n"
        "def ours():\n"
        "    parse_metric_filter('val_loss')  # a ValueError of our own validation\n"
        "cli(prog_name='t')\n"
    )
    runs = {
        name: subprocess.run(
            [sys.executable, str(script), name], capture_output=True, text=True, cwd=REPO
        )
        for name in ("bug", "foreign", "ours")
    }
    for name in ("bug", "foreign"):
        assert runs[name].returncode == 1 and "Traceback" in runs[name].stderr, runs[name].stderr
    assert "RuntimeError: a bug" in runs["bug"].stderr
    assert "JSONDecodeError" in runs["foreign"].stderr
    ours = runs["ours"]
    assert ours.returncode == 2 and "Traceback" not in ours.stderr
    assert ours.stderr.strip().startswith("Error: metric filter 'val_loss' not understood")
