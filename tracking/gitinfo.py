"""The git commit and dirty flag of the code a run was started from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tracking.documents import redact_text


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def detect_git(cwd: Path | None = None) -> dict:
    """``{"commit", "dirty", "branch", "remote"}`` of the repository containing ``cwd``.

    Every value is None outside a git checkout (or without git). ``dirty`` counts changes to
    tracked files only; the remote URL has any password masked.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None, "remote": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    remote = _git(["config", "--get", "remote.origin.url"], cwd)
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "branch": branch,
        "remote": redact_text(remote) if remote else None,
    }
