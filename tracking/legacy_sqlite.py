"""Reading an EEG2025 SQLite run log (read-only): its tables and the rows its views return.

Source schema: tables ``subjects``, ``training_runs``, ``epoch_history``, ``model_checkpoints``,
``cache_files``, ``config`` and views ``best_models``, ``training_summary``. The mapping of each
table to tracking documents is in :mod:`tracking.legacy_mappers`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking.errors import MigrationError

REQUIRED_TABLES = ("training_runs", "epoch_history", "model_checkpoints")
OPTIONAL_TABLES = ("subjects", "cache_files", "config")
VIEWS = ("best_models", "training_summary")


@dataclass(frozen=True)
class LegacyLog:
    """Every row of the tables (missing optional tables are empty) and of the views present."""

    tables: dict[str, list[dict[str, Any]]]
    views: dict[str, list[dict[str, Any]]]


def read_legacy_log(path: Path) -> LegacyLog:
    """Read every table and view of the run log at ``path`` (opened read-only).

    Raises
    ------
    MigrationError
        When ``path`` is missing, is not an SQLite database, or lacks a required table (the
        message lists what it found and what was expected).
    """
    if not path.is_file():
        raise MigrationError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        kinds = {r["name"]: r["type"] for r in conn.execute("SELECT name, type FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise MigrationError(f"{path}: not an SQLite database ({exc})") from exc
    try:
        _check_schema(path, kinds)
        tables = {
            table: _select(conn, f'SELECT * FROM "{table}" ORDER BY rowid')
            if kinds.get(table) == "table"
            else []
            for table in REQUIRED_TABLES + OPTIONAL_TABLES
        }
        views = {view: _view_rows(conn, view) for view in VIEWS if kinds.get(view) == "view"}
        return LegacyLog(tables, views)
    finally:
        conn.close()


def _check_schema(path: Path, kinds: dict[str, str]) -> None:
    missing = [t for t in REQUIRED_TABLES if kinds.get(t) != "table"]
    if missing:
        found = ", ".join(sorted(n for n, t in kinds.items() if t in ("table", "view"))) or "none"
        raise MigrationError(
            f"{path}: not the EEG2025 run-log schema: table(s) {', '.join(missing)} missing "
            f"(found {found}); expected {', '.join(REQUIRED_TABLES + OPTIONAL_TABLES)}"
        )


def _select(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql)]


def _view_rows(conn: sqlite3.Connection, view: str) -> list[dict[str, Any]]:
    # A view over a column the file no longer has fails only when read: keep the others.
    try:
        return _select(conn, f'SELECT * FROM "{view}"')
    except sqlite3.DatabaseError:
        return []


__all__ = ["OPTIONAL_TABLES", "REQUIRED_TABLES", "VIEWS", "LegacyLog", "read_legacy_log"]
