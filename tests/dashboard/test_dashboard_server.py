"""``eegfs dashboard``: the Streamlit command line it runs, the loopback default, the warning
for other addresses, and the settings handed to the app."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from dashboard import server
from eegfs.cli import cli


def test_loopback_addresses():
    assert server.is_loopback("127.0.0.1") and server.is_loopback("localhost")
    assert server.is_loopback("::1") and server.is_loopback("[::1]")
    assert server.is_loopback("127.0.0.2")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("192.168.1.5")
    assert not server.is_loopback("example.org")


def test_streamlit_command_is_headless_private_and_quiet():
    command = server.streamlit_command("127.0.0.1", 8600)
    options = dict(zip(command[5::2], command[6::2], strict=False))
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(server.APP_SCRIPT)]
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8600"
    assert options["--server.headless"] == "true"
    assert options["--browser.gatherUsageStats"] == "false"
    assert options["--server.fileWatcherType"] == "none"
    assert command.count("--server.allowedHosts") == len(server.LOOPBACK_HOSTS)
    shared = server.streamlit_command("0.0.0.0", 8600)
    assert "--server.allowedHosts" not in shared
    with pytest.raises(ValueError, match="port must be 1-65535"):
        server.streamlit_command("127.0.0.1", 70000)


def test_the_app_reads_the_resolved_settings(settings):
    env = server.child_environment(settings, {"PATH": "/bin", "MONGO_URI": "mongodb://elsewhere/"})
    assert env["MONGO_URI"] == settings.mongo_uri and env["MONGO_DB"] == settings.mongo_db
    assert env["REDIS_URL"] == settings.redis_url and env["PATH"] == "/bin"
    assert env["EEGFS_DATA_DIR"] == str(settings.data_dir.resolve())


class _Recorded:
    """Stands in for the Streamlit child process: records how it was started."""

    calls: list = []

    def __init__(self, command, env):
        self.calls.append((command, env))

    def wait(self, timeout=None):
        return 0


def test_cli_warns_that_another_address_has_no_login(monkeypatch, cli_env):
    _Recorded.calls = []
    monkeypatch.setattr(server.subprocess, "Popen", _Recorded)
    result = CliRunner().invoke(
        cli, ["dashboard", "--host", "0.0.0.0", "--port", "8600"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    assert "warning: the dashboard has no login" in result.output
    command, env = _Recorded.calls[0]
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert env["MONGO_DB"] == cli_env["MONGO_DB"]


def test_cli_default_binds_loopback_without_warning(monkeypatch, cli_env):
    _Recorded.calls = []
    monkeypatch.setattr(server.subprocess, "Popen", _Recorded)
    result = CliRunner().invoke(cli, ["dashboard"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "http://127.0.0.1:8501" in result.output
    command, _ = _Recorded.calls[0]
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8501"


def test_cli_help_and_bad_port(cli_env):
    help_text = CliRunner().invoke(cli, ["dashboard", "--help"]).output
    assert "--host" in help_text and "127.0.0.1" in help_text and "no login" in help_text
    bad = CliRunner().invoke(cli, ["dashboard", "--port", "0"], env=cli_env)
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_streamlit_accepts_the_command_line():
    """Streamlit's own parser accepts every option we pass (a renamed option would fail here)."""
    command = server.streamlit_command("127.0.0.1", 8600)
    check = [sys.executable, "-m", "streamlit", "config", "show"]
    flags = command[5:]
    out = subprocess.run(check + flags, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'fileWatcherType = "none"' in out.stdout and "gatherUsageStats = false" in out.stdout
