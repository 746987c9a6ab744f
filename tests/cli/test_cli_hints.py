"""Every hint the CLI can print names options that exist on the command that prints it.

Hints are collected from the sources (string constants holding ``--option`` and a space, so
argument lists such as ``["--port", "6379"]`` are not hints):

* ``eegfs <command> ... --option`` anywhere (messages, help texts, docstrings): the option must
  exist on that command;
* a bare ``--option`` in a command module (eegfs/commands/): it must exist on the command whose
  function holds it (or, in a helper, on one of the module's commands);
* a bare ``--option`` in a library module: on every command listed for that module in
  ``SHOWN_BY``; a module that names options and is not listed fails the test, so a new hint has
  to say who shows it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from cli_testlib import REPO, command_of, leaf_commands, option_names

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
EEGFS_CALL = re.compile(r"\beegfs ((?:[a-z][a-z-]* ?)+)((?:[^`'\"\n]*?))(?:[`'\"\n]|$)")
LIBRARIES = ("services", "pipelines", "featurestore", "tracking", "training", "jobs", "demodata")

#: Library module (or command helper module) -> the commands that print its messages.
SHOWN_BY = {
    "eegfs/commands/__init__.py": ["features build", "features push", "datasets register"],
    "demodata/writer.py": ["demo-data"],
    "featurestore/commands.py": ["features get"],
    "jobs/queue.py": ["jobs submit", "sweep create"],
    "jobs/space.py": ["sweep create"],
    "jobs/sweeps.py": ["sweep create"],
    "jobs/worker.py": ["worker"],
    "pipelines/build.py": ["features build", "features push"],
    "pipelines/hdf5_layout.py": ["features build", "features push", "datasets register"],
    "pipelines/participants.py": ["features build", "features push", "subjects sync"],
    "services/compose_env.py": ["services compose-env"],
    "tracking/claims.py": ["train"],
    "tracking/registry.py": ["models register"],
    "tracking/subjects.py": ["subjects sync"],
    "training/claiming.py": ["train"],
    "training/config.py": ["train"],
    "training/features.py": ["train"],
    "training/index.py": ["train"],
    "training/loop.py": ["train"],
    "training/prepare.py": ["train"],
    "training/reproduce.py": ["runs reproduce"],
    "training/runner.py": ["train"],
    "training/splits.py": ["train"],
}
#: Options of other programs that a message names on purpose (module -> options).
FOREIGN = {"jobs/worker.py": {"--appendonly"}}  # redis-server's, in a persistence warning


def _strings(tree: ast.AST):
    """(string, enclosing function name or None, is_docstring) of every str constant."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }

    def visit(node, function):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, function, id(node) in docstrings
        for child in ast.iter_child_nodes(node):
            yield from visit(child, function)

    yield from visit(tree, None)


def _sources() -> list[Path]:
    files = sorted((REPO / "eegfs").rglob("*.py"))
    for package in LIBRARIES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def _command_named(words: str) -> str | None:
    """The longest leaf command that ``words`` starts with."""
    parts = words.split()
    commands = set(leaf_commands())
    for n in range(len(parts), 0, -1):
        if " ".join(parts[:n]) in commands:
            return " ".join(parts[:n])
    return None


def _eegfs_calls():
    for path in _sources():
        for text, _, _ in _strings(ast.parse(path.read_text())):
            for match in EEGFS_CALL.finditer(text):
                command = _command_named(match.group(1))
                rest = match.group(1)[len(command or "") :] + match.group(2)
                if command == "jobs submit":  # options after the job's command are that one's
                    command = _command_named(rest) or command
                    rest = rest.strip()[len(command) :]
                options = OPTION.findall(rest)
                if command and options:
                    yield path.relative_to(REPO).as_posix(), command, options


def _callbacks(module: str) -> dict[str, str]:
    """Function name -> command path of the commands defined in ``module``."""
    out = {}
    for path in leaf_commands():
        callback = command_of(path).callback
        callback = getattr(callback, "__wrapped__", callback)
        if callback is not None and callback.__module__ == module:
            out[callback.__name__] = path
    return out


def _bare_hints():
    """(file, commands that show it, options) of bare option hints outside `eegfs ...` calls."""
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        module = rel[:-3].replace("/", ".")
        callbacks = _callbacks(module) if rel.startswith("eegfs/commands/") else {}
        for text, function, is_doc in _strings(ast.parse(path.read_text())):
            if is_doc or " " not in text.strip():
                continue
            options = set(OPTION.findall(EEGFS_CALL.sub("", text))) - FOREIGN.get(rel, set())
            if not options:
                continue
            if rel in SHOWN_BY:
                owners = SHOWN_BY[rel]
            elif rel.startswith("eegfs/") and function not in callbacks:
                # a helper of the module's commands: the options of any of them
                owners = [" | ".join(callbacks.values())]
            elif rel.startswith("eegfs/"):
                owners = [callbacks[function]]
            else:
                owners = SHOWN_BY.get(rel)
            yield rel, owners, sorted(options), text


def test_eegfs_calls_name_options_of_that_command():
    calls = list(_eegfs_calls())
    assert len(calls) > 5  # the scan finds the examples and hints
    wrong = [
        (file, command, o)
        for file, command, options in calls
        for o in options
        if o not in option_names(command)
    ]
    assert wrong == []


def test_every_module_with_hints_says_who_shows_them():
    unlisted = {rel for rel, owners, _, _ in _bare_hints() if owners is None}
    assert unlisted == set()


@pytest.mark.parametrize("module", sorted(SHOWN_BY))
def test_listed_modules_exist(module):
    assert (REPO / module).is_file()


def test_bare_hints_name_options_of_the_commands_showing_them():
    hints = list(_bare_hints())
    assert any(rel == "featurestore/commands.py" for rel, *_ in hints)  # --allow-missing
    wrong = []
    for rel, owners, options, text in hints:
        for command in owners or []:
            known = set().union(*(option_names(c) for c in command.split(" | ")))
            missing = [o for o in options if o not in known]
            if missing:
                wrong.append((rel, command, missing, text[:80]))
    assert wrong == []
