"""Credentials for the team servers of ``docker-compose.yml``, written into ``.env``.

``docker compose up -d`` refuses to start until ``.env`` sets every password (the compose file
requires them with ``${VAR:?...}``). :func:`write_compose_env` adds random ones, and the
``REDIS_URL`` / ``MONGO_URI`` that reach the servers with them, for the keys that ``.env`` does not
set yet. It never changes a value that is there, and never prints one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

from services.connections import ServiceError
from services.files import atomic_write_text

#: Keys the compose file requires, with how each default is made.
PASSWORD_KEYS = ("REDIS_PASSWORD", "MONGO_ROOT_PASSWORD", "MONGO_APP_PASSWORD")
USER_DEFAULTS = {"MONGO_ROOT_USER": "root", "MONGO_APP_USER": "eegfs"}
COMPOSE_REDIS_ADDRESS = "127.0.0.1:6379"
COMPOSE_MONGO_ADDRESS = "127.0.0.1:27017"
COMPOSE_REPLICA_SET = "rs0"


def compose_uris(values: Mapping[str, str]) -> dict[str, str]:
    """``REDIS_URL`` and ``MONGO_URI`` of the compose servers, credentials percent-encoded."""
    redis_password = quote(values["REDIS_PASSWORD"], safe="")
    user = quote(values["MONGO_APP_USER"], safe="")
    password = quote(values["MONGO_APP_PASSWORD"], safe="")
    return {
        "REDIS_URL": f"redis://:{redis_password}@{COMPOSE_REDIS_ADDRESS}/0",
        "MONGO_URI": (
            f"mongodb://{user}:{password}@{COMPOSE_MONGO_ADDRESS}/"
            f"?replicaSet={COMPOSE_REPLICA_SET}&authSource=admin"
        ),
    }


def missing_compose_values(existing: Mapping[str, str | None]) -> dict[str, str]:
    """The compose keys that ``existing`` lacks (or has empty), with new values for them."""
    values = {k: v for k, v in existing.items() if v}
    added: dict[str, str] = {}
    for key, default in USER_DEFAULTS.items():
        if key not in values:
            added[key] = default
    for key in PASSWORD_KEYS:
        if key not in values:
            added[key] = secrets.token_urlsafe(24)  # URL-safe: no escaping anywhere
    merged = {**values, **added}
    for key, uri in compose_uris(merged).items():
        if key not in values:
            added[key] = uri
    return added


def write_compose_env(path: Path) -> list[str]:
    """Append the missing compose credentials to the env file ``path`` (mode 0600).

    Returns the keys added (never their values). An existing value is never changed. Raises
    :class:`~services.connections.ServiceError` when the file cannot be written.
    """
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    added = missing_compose_values(dotenv_values(path) if path.is_file() else {})
    if not added:
        return []
    lines = [f"{key}='{value}'" for key, value in added.items()]
    header = "# Team servers (docker-compose.yml), written by `eegfs services compose-env`"
    separator = "" if not text or text.endswith("\n") else "\n"
    try:
        atomic_write_text(path, text + separator + "\n".join([header, *lines]) + "\n", mode=0o600)
    except OSError as exc:
        raise ServiceError(
            f"{path}: cannot write the env file ({exc.strerror or exc}); pass --env-file with a "
            "path in a writable directory"
        ) from exc
    return list(added)


__all__ = ["compose_uris", "missing_compose_values", "write_compose_env"]
