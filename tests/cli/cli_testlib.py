"""Helpers of the CLI message tests: every command of the app, runs in-process and as a
subprocess, and the checks that a failure is one clear line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from click.testing import CliRunner

from eegfs.cli import cli

REPO = Path(__file__).resolve().parents[2]
#: The user, right and wrong password of the servers that require a login (tests/cli/conftest.py).
USER = "eegfs"
PASSWORD = "right-pass"
WRONG = "wrong-pass"
#: What no output of a failing command may hold.
TRACEBACK = "Traceback"


def leaf_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command that runs something (``"features get"``, ``"doctor"``), from the app."""
    out = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            out += leaf_commands(command, path)
        else:
            out.append(" ".join(path))
    return out


def command_of(path: str) -> click.Command:
    """The click command named by ``path`` (``"features get"``)."""
    command: click.Command = cli
    for name in path.split():
        assert isinstance(command, click.Group), path
        command = command.commands[name]
    return command


def option_names(path: str) -> set[str]:
    """Every option spelling (``--allow-missing``, ``-n``) that command ``path`` accepts."""
    return {o for p in command_of(path).params for o in (*p.opts, *p.secondary_opts)}


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    text: str  # stdout and stderr
    exception: BaseException | None = None


def run_cli(args: list[str], env: dict[str, str]) -> Outcome:
    """``eegfs ARGS`` in this process (click's runner) with ``env`` set."""
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=True)
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.stdout + result.stderr, exc)


def run_eegfs(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 300) -> Outcome:
    """``eegfs ARGS`` as a subprocess with stdout and stderr pipes (not terminals)."""
    full = {**os.environ, **env}
    full.pop("FORCE_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "eegfs", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout + proc.stderr)


def assert_clean_failure(outcome: Outcome, expect: str, *, forbid: tuple[str, ...] = ()) -> None:
    """A non-zero exit, no traceback, a message matching ``expect`` and none of ``forbid``."""
    shown = f"exit {outcome.exit_code}, output:\n{outcome.text}"
    assert outcome.exception is None, f"uncaught {outcome.exception!r}; {shown}"
    assert outcome.exit_code != 0, shown
    assert TRACEBACK not in outcome.text, shown
    assert re.search(expect, outcome.text, re.IGNORECASE), f"expected /{expect}/; {shown}"
    for text in forbid:
        assert text not in outcome.text, f"{text!r} shown; {shown}"
