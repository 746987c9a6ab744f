"""``eegfs doctor``: check what a run needs and say how to fix each failure.

Each check is a function ``settings -> str`` that returns a short description when the check
passes and raises with a message when it fails; :func:`run_checks` turns them into one
:class:`CheckResult` per check. Checks of higher layers (the Feast repository) are passed in by
the caller, so this module imports nothing of ours above ``services``.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement

from services.connections import mask_uri
from services.local import login_refused, ping_mongo, ping_redis
from services.settings import Settings

Check = Callable[[Settings], str]

#: The installed distribution whose requirements the packages check reads.
DISTRIBUTION = "eeg-feature-store"
INSTALL_FIX = "make install (or: pip install -e '.[local]' -c constraints.txt)"


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


@dataclass(frozen=True)
class RequirementCheck:
    """One requirement of the project (``extra`` None for the base dependencies)."""

    requirement: str
    extra: str | None
    installed: str | None  # the installed version, None when not installed

    @property
    def satisfied(self) -> bool:
        if self.installed is None:
            return False
        return Requirement(self.requirement).specifier.contains(self.installed, prereleases=True)


def _extras_of(requirement: Requirement, extras: Sequence[str]) -> list[str | None]:
    """The extras (None: the base install) under which ``requirement`` applies here."""
    marker = requirement.marker
    if marker is None or marker.evaluate({"extra": ""}):
        return [None]
    return [e for e in extras if marker.evaluate({"extra": e})]


def _without_marker(requirement: Requirement) -> str:
    """``name[extras]specifier`` (the marker decided where it applies; it is not shown)."""
    shown = Requirement(str(requirement))
    shown.marker = None
    return str(shown)


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _requirements_of(
    distribution: str, extras: Sequence[str]
) -> list[tuple[Requirement, str | None]]:
    """``(requirement, extra)`` pairs of an installed distribution, for its base and ``extras``."""
    found: list[tuple[Requirement, str | None]] = []
    for text in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(text)
        found += [(requirement, extra) for extra in _extras_of(requirement, extras)]
    return found


def project_requirements(distribution: str = DISTRIBUTION) -> list[RequirementCheck]:
    """Every requirement of the installed project, base and extras, with what is installed.

    Read from the distribution's metadata (what ``pip install`` used), never from a hand-kept
    list. A requirement with extras of its own (``feast[redis]``) also brings the requirements
    that package declares for those extras (``redis``, ``hiredis``), attributed to the same extra
    of ours.

    Raises
    ------
    importlib.metadata.PackageNotFoundError
        When the project is not installed (a bare source checkout).
    """
    extras = importlib.metadata.metadata(distribution).get_all("Provides-Extra") or []
    checks = []
    for requirement, extra in _requirements_of(distribution, extras):
        checks += _check_requirement(requirement, extra)
    return checks


def _check_requirement(requirement: Requirement, extra: str | None) -> list[RequirementCheck]:
    """``requirement`` and, when installed with extras of its own, what those extras need."""
    installed = _installed_version(requirement.name)
    checks = [RequirementCheck(_without_marker(requirement), extra, installed)]
    if requirement.extras and installed is not None:
        for nested, nested_extra in _requirements_of(requirement.name, sorted(requirement.extras)):
            if nested_extra is not None:  # the package's own base is pip check's business
                version = _installed_version(nested.name)
                checks.append(RequirementCheck(_without_marker(nested), extra, version))
    return checks


def check_packages(settings: Settings) -> str:
    """The project's requirements, read from its installed metadata (see :func:`judge_requirements`)."""
    try:
        checks = project_requirements()
    except importlib.metadata.PackageNotFoundError as exc:
        raise CheckFailed(f"the {DISTRIBUTION} distribution is not installed", INSTALL_FIX) from exc
    return judge_requirements(checks)


def judge_requirements(checks: Sequence[RequirementCheck]) -> str:
    """A one-line summary of ``checks``; raises :class:`CheckFailed` for a real problem.

    Fails for a base requirement that is missing and for any installed package outside its
    version range. An extra counts as installed when all of its packages are; extras that are
    not (fully) installed are named in the summary, which is not a failure.
    """
    missing = [c.requirement for c in checks if c.extra is None and c.installed is None]
    wrong = [
        f"{c.requirement} ({c.installed} installed)"
        for c in checks
        if c.installed and not c.satisfied
    ]
    if missing or wrong:
        problems = [f"missing: {', '.join(missing)}"] if missing else []
        problems += [f"outside the required range: {', '.join(wrong)}"] if wrong else []
        raise CheckFailed("; ".join(problems), INSTALL_FIX)
    base = sum(c.extra is None for c in checks)
    installed, partial = _extras_state(checks)
    detail = f"{base} required packages installed"
    if installed:
        detail += f"; extras installed: {', '.join(installed)}"
    for extra, absent in partial.items():
        detail += f"; extra {extra!r} not installed (missing {', '.join(absent)})"
    return detail


def _extras_state(checks: Sequence[RequirementCheck]) -> tuple[list[str], dict[str, list[str]]]:
    """Extras whose packages are all installed, and the missing packages of the others."""
    by_extra: dict[str, list[RequirementCheck]] = {}
    for c in checks:
        if c.extra is not None:
            by_extra.setdefault(c.extra, []).append(c)
    installed, partial = [], {}
    for extra, members in by_extra.items():
        absent = [Requirement(c.requirement).name for c in members if c.installed is None]
        if absent:
            partial[extra] = absent
        else:
            installed.append(extra)
    return installed, partial


def _check_server(
    label: str, uri: str, source: str, version: str | None, env_key: str, local: str
) -> str:
    if version is None:
        refused = login_refused("redis" if label == "Redis" else "mongodb", uri)
        if refused is not None:
            raise CheckFailed(refused, f"fix the user and password in {env_key}")
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
