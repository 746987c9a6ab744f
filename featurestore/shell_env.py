"""Shell variables for the plain ``feast`` CLI in ``feature_repo/`` (``eegfs features env``).

The eegfs commands and the Python client hand Feast a redis-py client built from ``REDIS_URL``
(:mod:`featurestore.connection`). The plain ``feast`` CLI can only read Feast's connection
string, ``host:port,db=N[,username=..][,password=..][,ssl=true]``, which
``feature_repo/feature_store.yaml`` takes from ``EEGFS_FEAST_REDIS``. That format cannot carry
every password: Feast splits it on ``,`` and JSON-decodes each value (``123``, ``true``, ``null``
change type), and the value passes through YAML (``: `` or `` #`` and edge spaces change it).
:func:`feast_connection_string` refuses such credentials, naming the character or the reason
and never the credential; everything else about them works without this string.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import yaml

from featurestore import feast_adapter
from featurestore.errors import FeatureStoreError
from services.connections import ServiceError, redis_host_port_db
from services.settings import Settings

#: Variable that feature_repo/feature_store.yaml reads the connection string from.
FEAST_REDIS_VAR = "EEGFS_FEAST_REDIS"
_PROBE_NODE = "localhost:6379"


def _survives_yaml(text: str) -> bool:
    """True when ``connection_string: <text>`` in feature_store.yaml reads back as ``text``."""
    try:
        loaded = yaml.safe_load(f"online_store:\n  connection_string: {text}\n")
    except yaml.YAMLError:
        return False
    online = loaded.get("online_store") if isinstance(loaded, dict) else None
    return isinstance(online, dict) and online.get("connection_string") == text


def _feast_reads_back(key: str, value: str) -> bool:
    """True when Feast's parser gives back ``value`` (a str) for ``key=value``."""
    _, params = feast_adapter.parse_connection_string(f"{_PROBE_NODE},{key}={value}")
    parsed = params.get(key)
    return isinstance(parsed, str) and parsed == value


def _refuse(label: str, problem: str) -> FeatureStoreError:
    return FeatureStoreError(
        f"the {label} in REDIS_URL {problem}, so Feast's connection string ({FEAST_REDIS_VAR}) "
        "cannot carry it for the plain `feast` CLI. The eegfs commands and the Python client "
        "work with it (`eegfs features apply`, `eegfs features materialize`); to use the plain "
        f"feast CLI, choose a {label} without it"
    )


def check_carriable(label: str, key: str, value: str) -> None:
    """Raise :class:`FeatureStoreError` when ``key=value`` does not survive Feast's parsing.

    The message names the offending character or the reason, never ``value``.
    """
    if "," in value:
        raise _refuse(label, "contains ','")
    if not _feast_reads_back(key, value):
        raise _refuse(label, "reads as JSON (a number or a JSON keyword), which Feast decodes")
    if _survives_yaml(f"{_PROBE_NODE},{key}={value}"):
        return
    for end in range(1, len(value) + 1):
        if not _survives_yaml(f"{_PROBE_NODE},{key}={value[:end]}"):
            raise _refuse(label, f"contains {value[end - 1]!r} where YAML reads it differently")
    raise _refuse(label, "changes when YAML reads it")


def feast_connection_string(url: str) -> str:
    """Feast's Redis ``connection_string`` for ``url`` (only for the plain ``feast`` CLI).

    Raises
    ------
    FeatureStoreError
        ``url`` is no Redis URL, or its user name or password cannot go through the string.
    """
    try:
        host, port, db = redis_host_port_db(url)
    except ServiceError as exc:
        raise FeatureStoreError(str(exc)) from exc
    parts = urlsplit(url)
    fields = [f"{host}:{port}", f"db={db}"]
    credentials = (
        ("user name", "username", unquote(parts.username or "")),
        ("password", "password", unquote(parts.password or "")),
    )
    for label, key, value in credentials:
        if value and not (key == "username" and value == "default"):
            check_carriable(label, key, value)
            fields.append(f"{key}={value}")
    if parts.scheme == "rediss":
        fields.append("ssl=true")
    return ",".join(fields)


def shell_environment(settings: Settings) -> dict[str, str]:
    """Variables the plain Feast CLI needs in ``feature_repo/`` (``eegfs features env``)."""
    return {FEAST_REDIS_VAR: feast_connection_string(settings.redis_url)}


__all__ = ["FEAST_REDIS_VAR", "check_carriable", "feast_connection_string", "shell_environment"]
