"""``eegfs services up|down|status``: use the configured servers, or run local ones.

For each service: a configured server (environment or ``.env``) is used as it is; with none
configured, a server already answering on the default address is used; otherwise a local one is
started on the default port with its data, log and a state file (pid, address) under
``<data_dir>/services/``. ``down`` stops only what ``up`` started, identified by the state file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.connections import ServiceError, mask_uri
from services.local import (
    LocalServer,
    is_same_process,
    login_refused,
    ping_mongo,
    ping_redis,
    start_mongo,
    start_redis,
    stop_process,
)
from services.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # also the state file's stem
    label: str
    env_key: str
    ping: Callable[[str], str | None]
    start: Callable[[int, Path], LocalServer]


SPECS = (
    ServiceSpec("redis", "Redis", "REDIS_URL", ping_redis, start_redis),
    ServiceSpec("mongodb", "MongoDB", "MONGO_URI", ping_mongo, start_mongo),
)


def _default(settings: Settings, spec: ServiceSpec) -> tuple[str, int]:
    """Default address of a service and the port a local server for it listens on."""
    if spec.name == "redis":
        return settings.default_redis_url, settings.local_redis_port
    return settings.default_mongo_uri, settings.local_mongo_port


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    uri: str  # password masked
    origin: str  # configured | already running | started here | not running
    answering: bool
    version: str | None = None
    pid: int | None = None
    note: str = ""


def _state_path(settings: Settings, name: str) -> Path:
    return settings.services_dir / f"{name}.json"


def _read_state(settings: Settings, name: str) -> dict | None:
    try:
        return json.loads(_state_path(settings, name).read_text())
    except (OSError, ValueError):
        return None


def _write_state(settings: Settings, server: LocalServer) -> None:
    from services.files import atomic_write_text

    # 0600 as before: the state file is this user's bookkeeping of its own servers.
    atomic_write_text(
        _state_path(settings, server.name), json.dumps(server.to_state(), indent=2), mode=0o600
    )


def _configured_uri(settings: Settings, spec: ServiceSpec) -> str | None:
    if spec.name == "redis":
        return settings.redis_url if settings.redis_source == "configured" else None
    return settings.mongo_uri if settings.mongo_source == "configured" else None


def _live_state(settings: Settings, spec: ServiceSpec) -> dict | None:
    """The state file of a server started here whose process is still the one recorded."""
    state = _read_state(settings, spec.name)
    if state is None:
        return None
    if is_same_process(int(state.get("pid", -1)), state.get("create_time")):
        return state
    _state_path(settings, spec.name).unlink(missing_ok=True)  # stale: the process is gone
    return None


def service_status(settings: Settings, spec: ServiceSpec) -> ServiceStatus:
    configured = _configured_uri(settings, spec)
    if configured is not None:
        version = spec.ping(configured)
        note = (
            ""
            if version
            else login_refused(spec.name, configured)
            or f"configured {spec.env_key} does not answer"
        )
        return ServiceStatus(
            spec.name, mask_uri(configured), "configured", bool(version), version, note=note
        )
    state = _live_state(settings, spec)
    if state is not None:
        version = spec.ping(state["uri"])
        return ServiceStatus(
            spec.name,
            mask_uri(state["uri"]),
            "started here",
            bool(version),
            version,
            state["pid"],
            note=f"data and log in {state['data_dir']}",
        )
    default_uri, _ = _default(settings, spec)
    version = spec.ping(default_uri)
    origin = "already running" if version else "not running"
    note = "" if version else "run `eegfs services up` to start a local one"
    return ServiceStatus(
        spec.name, mask_uri(default_uri), origin, bool(version), version, note=note
    )


def services_status(settings: Settings) -> list[ServiceStatus]:
    """Status of every service, without changing anything."""
    return [service_status(settings, spec) for spec in SPECS]


def services_up(settings: Settings) -> list[ServiceStatus]:
    """Make every service answer, starting local servers where none is configured or running.

    Raises :class:`ServiceError` when a configured server does not answer (nothing is started in
    its place: the configuration says which server to use) or a local one cannot start.
    """
    results = []
    for spec in SPECS:
        status = service_status(settings, spec)
        if status.answering:
            results.append(status)
            continue
        if status.origin == "configured" and "authentication failed" in status.note:
            raise ServiceError(status.note)
        if status.origin == "configured":
            raise ServiceError(
                f"{spec.label} at {status.uri} ({spec.env_key}) does not answer: start that "
                f"server, or unset {spec.env_key} to let `eegfs services up` run a local one"
            )
        _, port = _default(settings, spec)
        server = spec.start(port, settings.services_dir / spec.name)
        _write_state(settings, server)
        results.append(service_status(settings, spec))
    return results


def services_down(settings: Settings) -> list[str]:
    """Stop the servers that ``services_up`` started here; wait until each has exited."""
    stopped = []
    for spec in SPECS:
        state = _live_state(settings, spec)
        if state is None:
            continue
        stop_process(int(state["pid"]))
        _state_path(settings, spec.name).unlink(missing_ok=True)
        stopped.append(f"{spec.label} (pid {state['pid']}, {mask_uri(state['uri'])})")
    return stopped


__all__ = ["ServiceError", "ServiceStatus", "services_down", "services_status", "services_up"]
