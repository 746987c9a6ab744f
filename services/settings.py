"""The one place where settings are read from the environment and ``.env``.

Every other module receives a :class:`Settings` (or plain values taken from it) as an argument;
nothing else reads ``os.environ`` for these keys.

Resolution order for each value: process environment, then ``.env`` in the working directory
(or the file that ``EEGFS_ENV_FILE`` names; an empty ``EEGFS_ENV_FILE`` reads none), then (for the
server addresses only) the state file of a server that ``eegfs services up`` started here, then the
built-in default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values

DEFAULT_REDIS_PORT = 6379
DEFAULT_MONGO_PORT = 27017
DEFAULT_REDIS_URL = f"redis://localhost:{DEFAULT_REDIS_PORT}/0"
DEFAULT_MONGO_URI = f"mongodb://localhost:{DEFAULT_MONGO_PORT}/"
DEFAULT_MONGO_DB = "eeg2025"
DEFAULT_DATA_DIR = "data"
DEFAULT_FEATURE_REPO = "feature_repo"
DEFAULT_ENV_FILE = ".env"
#: Prefix of the job queue's own Redis keys (RQ's ``rq:`` keys keep their fixed prefix).
DEFAULT_JOBS_PREFIX = "eegfs"
#: Seconds within which a live worker refreshes its heartbeat (see docs/jobs.md).
DEFAULT_HEARTBEAT_S = 5.0
#: Seconds a command waits for MongoDB to answer before saying it does not (pymongo's own
#: default is 30 s).
DEFAULT_MONGO_TIMEOUT_S = 5.0
#: Names the settings file to read under the environment; empty means "read none".
ENV_FILE_KEY = "EEGFS_ENV_FILE"

#: Job context that a worker passes to the ``eegfs`` process running a job (read only here).
JOB_ENV_KEYS = (
    "EEGFS_JOB_ID",
    "EEGFS_JOB_ATTEMPT",
    "EEGFS_JOB_WORKER",
    "EEGFS_SWEEP",
    "EEGFS_TRIAL",
)

#: Environment variables read by :func:`load_settings` (documented in README and .env.example).
ENV_KEYS = (
    "REDIS_URL",
    "MONGO_URI",
    "MONGO_DB",
    "EEGFS_DATA_DIR",
    "EEGFS_FEATURE_REPO",
    "EEGFS_REDIS_PORT",
    "EEGFS_MONGO_PORT",
    "EEGFS_JOBS_PREFIX",
    "EEGFS_HEARTBEAT_S",
    "EEGFS_MONGO_TIMEOUT_S",
    *JOB_ENV_KEYS,
)

Source = Literal["configured", "started here", "default"]


@dataclass(frozen=True)
class JobContext:
    """The job attempt that the current process runs for (set by an ``eegfs worker``).

    ``sweep``/``trial`` name the sweep and Optuna trial number when the job is a sweep trial.
    """

    job_id: str
    attempt: int
    worker: str
    sweep: str | None = None
    trial: int | None = None

    def to_env(self) -> dict[str, str]:
        """The environment variables that :func:`load_settings` reads back into this context."""
        env = {
            "EEGFS_JOB_ID": self.job_id,
            "EEGFS_JOB_ATTEMPT": str(self.attempt),
            "EEGFS_JOB_WORKER": self.worker,
        }
        if self.sweep is not None and self.trial is not None:
            env.update(EEGFS_SWEEP=self.sweep, EEGFS_TRIAL=str(self.trial))
        return env


@dataclass(frozen=True)
class Settings:
    """Immutable settings for one process.

    ``redis_source``/``mongo_source`` say where the address came from: ``configured`` (environment
    or ``.env``), ``started here`` (a local server started by ``eegfs services up``) or
    ``default`` (the built-in address, which may or may not answer).
    """

    redis_url: str = DEFAULT_REDIS_URL
    mongo_uri: str = DEFAULT_MONGO_URI
    mongo_db: str = DEFAULT_MONGO_DB
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    feature_repo: Path = Path(DEFAULT_FEATURE_REPO)
    redis_source: Source = "default"
    mongo_source: Source = "default"
    #: Port of the default address, and of a local server that ``eegfs services up`` starts.
    local_redis_port: int = DEFAULT_REDIS_PORT
    local_mongo_port: int = DEFAULT_MONGO_PORT
    #: Prefix of the job queue's Redis keys, and a worker's heartbeat interval in seconds.
    jobs_prefix: str = DEFAULT_JOBS_PREFIX
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    #: Seconds within which MongoDB must answer a command's first request.
    mongo_timeout_s: float = DEFAULT_MONGO_TIMEOUT_S
    #: Set only in a process that an ``eegfs worker`` started to run a job.
    job: JobContext | None = None

    @property
    def default_redis_url(self) -> str:
        return f"redis://localhost:{self.local_redis_port}/0"

    @property
    def default_mongo_uri(self) -> str:
        return f"mongodb://localhost:{self.local_mongo_port}/"

    @property
    def services_dir(self) -> Path:
        """Data, logs and pid files of the local servers started by ``eegfs services up``."""
        return self.data_dir / "services"

    @property
    def features_dir(self) -> Path:
        """Parquet feature tables (the offline store)."""
        return self.data_dir / "features"

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "demo"

    def __repr__(self) -> str:
        # Addresses may hold passwords: a logged or printed Settings must never show them.
        from services.connections import mask_uri

        fields = ", ".join(
            f"{f.name}={mask_uri(v) if isinstance(v, str) else v!r}"
            if f.name in ("redis_url", "mongo_uri")
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({fields})"

    __str__ = __repr__

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests use it to point at their own servers)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """Environment variables from which :func:`load_settings` rebuilds these settings.

        A worker passes them to the ``eegfs`` process that runs a job, so the job uses exactly
        the worker's servers and directories (the values may hold passwords: never log them).
        """
        env = {
            "REDIS_URL": self.redis_url,
            "MONGO_URI": self.mongo_uri,
            "MONGO_DB": self.mongo_db,
            "EEGFS_DATA_DIR": str(self.data_dir),
            "EEGFS_FEATURE_REPO": str(self.feature_repo),
            "EEGFS_JOBS_PREFIX": self.jobs_prefix,
            "EEGFS_HEARTBEAT_S": repr(self.heartbeat_s),
            "EEGFS_MONGO_TIMEOUT_S": repr(self.mongo_timeout_s),
        }
        if self.job is not None:
            env.update(self.job.to_env())
        return env


def _read_state_uri(services_dir: Path, name: str) -> str | None:
    """Address of a local server that ``eegfs services up`` started and that is still recorded."""
    path = services_dir / f"{name}.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    uri = state.get("uri")
    return uri if isinstance(uri, str) and uri else None


_FROM_ENV = object()


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    dotenv_path: str | os.PathLike[str] | None | object = _FROM_ENV,
) -> Settings:
    """Build the settings from ``env`` (default: ``os.environ``) layered over ``.env``.

    Parameters
    ----------
    env:
        Mapping to read instead of the process environment (tests pass their own).
    dotenv_path:
        ``.env`` file to read under the environment; ``None`` skips it. A missing file is fine.
        By default it is ``EEGFS_ENV_FILE`` from ``env`` (empty: none), else ``.env``.
    """
    environ = os.environ if env is None else env
    if dotenv_path is _FROM_ENV:
        dotenv_path = environ.get(ENV_FILE_KEY, DEFAULT_ENV_FILE) or None
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update({k: environ[k] for k in ENV_KEYS if environ.get(k)})

    data_dir = Path(values.get("EEGFS_DATA_DIR", DEFAULT_DATA_DIR))
    services_dir = data_dir / "services"

    redis_port = _port(values, "EEGFS_REDIS_PORT", DEFAULT_REDIS_PORT)
    mongo_port = _port(values, "EEGFS_MONGO_PORT", DEFAULT_MONGO_PORT)
    redis_url, redis_source = _resolve(
        "REDIS_URL", values, services_dir, "redis", f"redis://localhost:{redis_port}/0"
    )
    mongo_uri, mongo_source = _resolve(
        "MONGO_URI", values, services_dir, "mongodb", f"mongodb://localhost:{mongo_port}/"
    )
    return Settings(
        redis_url=redis_url,
        mongo_uri=mongo_uri,
        mongo_db=values.get("MONGO_DB", DEFAULT_MONGO_DB),
        data_dir=data_dir,
        feature_repo=Path(values.get("EEGFS_FEATURE_REPO", DEFAULT_FEATURE_REPO)),
        redis_source=redis_source,
        mongo_source=mongo_source,
        local_redis_port=redis_port,
        local_mongo_port=mongo_port,
        jobs_prefix=_jobs_prefix(values),
        heartbeat_s=_positive_seconds(values, "EEGFS_HEARTBEAT_S", DEFAULT_HEARTBEAT_S),
        mongo_timeout_s=_positive_seconds(values, "EEGFS_MONGO_TIMEOUT_S", DEFAULT_MONGO_TIMEOUT_S),
        job=_job_context(values),
    )


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _port(values: Mapping[str, str], key: str, default: int) -> int:
    raw = values.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"{key} must be a TCP port number (1-65535), got {raw!r}")
    return int(raw)


def _jobs_prefix(values: Mapping[str, str]) -> str:
    prefix = values.get("EEGFS_JOBS_PREFIX", DEFAULT_JOBS_PREFIX)
    if not prefix or prefix == "rq" or any(c in prefix for c in " {}*?[]"):
        raise SettingsError(
            f"EEGFS_JOBS_PREFIX must be a non-empty key prefix other than 'rq' without spaces, "
            f"braces or glob characters, got {prefix!r}; example: eegfs"
        )
    return prefix


def _positive_seconds(values: Mapping[str, str], key: str, default: float) -> float:
    raw = values.get(key)
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise SettingsError(f"{key} must be seconds between 0.1 and 3600, got {raw!r}")
    return seconds


def _job_context(values: Mapping[str, str]) -> JobContext | None:
    job_id = values.get("EEGFS_JOB_ID")
    if not job_id:
        return None
    attempt = values.get("EEGFS_JOB_ATTEMPT", "")
    trial = values.get("EEGFS_TRIAL")
    if not attempt.isdigit() or (trial is not None and not trial.isdigit()):
        raise SettingsError(
            f"EEGFS_JOB_ATTEMPT (and EEGFS_TRIAL when set) must be whole numbers, got "
            f"{attempt!r} / {trial!r}; these are set by `eegfs worker`, not by hand"
        )
    return JobContext(
        job_id=job_id,
        attempt=int(attempt),
        worker=values.get("EEGFS_JOB_WORKER", ""),
        sweep=values.get("EEGFS_SWEEP") if trial is not None else None,
        trial=int(trial) if trial is not None else None,
    )


def _resolve(
    key: str, values: Mapping[str, str], services_dir: Path, state_name: str, default: str
) -> tuple[str, Source]:
    if key in values:
        return values[key], "configured"
    started = _read_state_uri(services_dir, state_name)
    if started is not None:
        return started, "started here"
    return default, "default"
