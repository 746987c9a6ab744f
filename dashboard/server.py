"""Start the dashboard: ``streamlit run dashboard/app/main.py`` with the project's settings.

Streamlit is started through its documented command line (``python -m streamlit run``) in a
child process, which receives the resolved settings in its environment (so it reads the same
servers as the ``eegfs`` process that started it, whatever ``.env`` says). It binds 127.0.0.1
unless told otherwise; the app has no login, so another address prints a warning first.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from dashboard import sources

APP_SCRIPT = Path(__file__).resolve().parent / "app" / "main.py"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
#: Seconds Streamlit gets to stop after Ctrl-C before it is killed.
STOP_TIMEOUT_S = 30
#: Host names accepted in the Host header when bound to loopback (guards against DNS
#: rebinding: a web page elsewhere cannot reach the dashboard through a name it controls).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def no_login_warning(host: str, port: int) -> str:
    return (
        f"warning: the dashboard has no login. Bound to {host}:{port}, anyone who can reach that "
        "address sees every run, model and feature (and the server addresses, passwords masked). "
        f"Use the default --host {DEFAULT_HOST} and an SSH tunnel to share it safely."
    )


def streamlit_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line: headless, no usage statistics, no file watcher,
    error details without messages (they could name a server), loopback Host names only when
    bound to loopback."""
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        "--server.address",
        host,
        "--server.port",
        str(int(port)),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--client.showErrorDetails",
        "stacktrace",
        "--global.developmentMode",
        "false",
    ]
    if is_loopback(host):
        for name in LOOPBACK_HOSTS:
            command += ["--server.allowedHosts", name]
    return command


def child_environment(settings: sources.Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the resolved settings, so the app reads exactly these servers."""
    env = dict(base)
    env.update(
        {
            "REDIS_URL": settings.redis_url,
            "MONGO_URI": settings.mongo_uri,
            "MONGO_DB": settings.mongo_db,
            "EEGFS_DATA_DIR": str(Path(settings.data_dir).resolve()),
            "EEGFS_FEATURE_REPO": str(Path(settings.feature_repo).resolve()),
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        }
    )
    return env


def serve(
    settings: sources.Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the dashboard until it is stopped (Ctrl-C); returns Streamlit's exit status."""
    if not is_loopback(host):
        echo(no_login_warning(host, port))
    shown = f"[{host}]" if ":" in host else host
    echo(f"EEG feature store dashboard: http://{shown}:{port}  (Ctrl-C stops it)")
    process = subprocess.Popen(
        streamlit_command(host, port), env=child_environment(settings, os.environ)
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the whole terminal group; a SIGTERM only us: pass it on, let Streamlit
        # close its sessions, and make sure it is gone before returning.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
