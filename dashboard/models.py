"""Data of the Models page: the registry, read-only, with the command for each change.

The registry (``models`` and ``model_versions``, written by ``tracking.registry``) holds one
document per model name (aliases) and one per version (checksum, GridFS copy, lineage back to
the run, its feature snapshot and code commit). The dashboard changes nothing: every change is
an ``eegfs models`` command, shown next to what it changes.
"""

from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
from pymongo.database import Database

from dashboard import sources

#: Lineage metrics shown per version (those it has).
VERSION_METRICS = ("val_subject_nrmse", "val_nrmse", "val_loss")

MODEL_COLUMNS = ["name", "description", "latest_version", "aliases", "updated_at"]
VERSION_COLUMNS = [
    "name",
    "version",
    "aliases",
    *VERSION_METRICS,
    "run_id",
    "run_name",
    "epoch",
    "snapshot_id",
    "feature_service",
    "code_commit",
    "sha256",
    "size_bytes",
    "portable",
    "created_at",
]


def models_frame(db: Database) -> pd.DataFrame:
    """One row per registered model: name, description, latest version, aliases, updated."""
    rows = [
        {
            "name": m.get("name"),
            "description": m.get("description") or "",
            "latest_version": m.get("latest_version"),
            "aliases": _aliases_text(m.get("aliases") or {}),
            "updated_at": m.get("updated_at"),
        }
        for m in db[sources.MODELS].find({}, {"alias_history": 0}).sort("name", 1)
    ]
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def _aliases_text(aliases: dict[str, Any]) -> str:
    return ", ".join(f"{alias} → v{version}" for alias, version in sorted(aliases.items()))


def versions_frame(db: Database, name: str | None = None, *, limit: int = 500) -> pd.DataFrame:
    """Versions (of model ``name``, or of every model), newest first, with lineage and aliases.

    Columns :data:`VERSION_COLUMNS`: the version's aliases, metrics at its checkpoint, the run
    it came from (``run_id``, ``run_name``, ``epoch``), the feature snapshot and service, the
    code commit, the checkpoint's sha256 and size, and ``portable`` (a GridFS copy exists).
    """
    query = {} if name is None else {"name": name}
    aliases: dict[tuple[str, int], list[str]] = {}
    for model in db[sources.MODELS].find(query, {"name": 1, "aliases": 1}):
        for alias, version in (model.get("aliases") or {}).items():
            aliases.setdefault((model["name"], version), []).append(alias)
    cursor = (
        db[sources.MODEL_VERSIONS]
        .find(query)
        .sort([("name", 1), ("version", -1)])
        .limit(int(limit))
    )
    rows = []
    for v in cursor:
        lineage = v.get("lineage") or {}
        metrics = lineage.get("metrics") or {}
        rows.append(
            {
                "name": v.get("name"),
                "version": v.get("version"),
                "aliases": ", ".join(sorted(aliases.get((v.get("name"), v.get("version")), []))),
                **{m: metrics.get(m) for m in VERSION_METRICS},
                "run_id": _str_or_none(lineage.get("experiment_id")),
                "run_name": lineage.get("experiment_name"),
                "epoch": lineage.get("epoch"),
                "snapshot_id": lineage.get("snapshot_id"),
                "feature_service": lineage.get("feature_service"),
                "code_commit": lineage.get("code_commit"),
                "sha256": v.get("sha256"),
                "size_bytes": v.get("size_bytes"),
                "portable": bool(v.get("portable")),
                "created_at": v.get("created_at"),
            }
        )
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


PREDICTION_COLUMNS = [
    "created_at",
    "name",
    "version",
    "input",
    "windows",
    "subjects",
    "from_snapshot",
    "from_online",
    "pushed",
    "subject_nrmse",
    "windows_per_s",
    "out",
    "host",
    "id",
]


def predictions_frame(db: Database, name: str | None = None, *, limit: int = 50) -> pd.DataFrame:
    """The latest ``limit`` ``eegfs predict`` runs (of model ``name``), newest first.

    Columns :data:`PREDICTION_COLUMNS`: when, which model version, the input file, how many
    windows and subjects, where each subject's features came from (the model's snapshot, the
    online store, or pushed first), the subject-level NRMSE when the file had targets, speed,
    the window Parquet written, host and the document id. Per-subject sources are not read.
    """
    query = {} if name is None else {"model.name": name}
    cursor = (
        db[sources.PREDICTIONS]
        .find(query, {"subject_sources": 0})
        .sort("created_at", -1)
        .limit(int(limit))
    )
    return pd.DataFrame([_prediction_row(d) for d in cursor], columns=PREDICTION_COLUMNS)


def _prediction_row(doc: dict[str, Any]) -> dict[str, Any]:
    model, counts = doc.get("model") or {}, doc.get("counts") or {}
    origin = counts.get("sources") or {}
    total_s = (doc.get("timing") or {}).get("total_s")
    windows = counts.get("windows")
    return {
        "created_at": doc.get("created_at"),
        "name": model.get("name"),
        "version": model.get("version"),
        "input": (doc.get("input") or {}).get("path"),
        "windows": windows,
        "subjects": counts.get("subjects"),
        "from_snapshot": origin.get("snapshot", 0),
        "from_online": origin.get("online", 0),
        "pushed": origin.get("pushed", 0),
        "subject_nrmse": (doc.get("metrics") or {}).get("subject_nrmse"),
        "windows_per_s": windows / total_s if windows and total_s else None,
        "out": (doc.get("out") or {}).get("windows"),
        "host": doc.get("host"),
        "id": str(doc["_id"]),
    }


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def change_commands(name: str, version: int | None = None) -> dict[str, str]:
    """The ``eegfs`` commands that change or fetch model ``name`` (the page only shows them)."""
    quoted = shlex.quote(name)
    target = str(version) if version is not None else "VERSION"
    return {
        "move an alias to this version": f"eegfs models alias {quoted} production {target}",
        "fetch a verified copy": f"eegfs models fetch {quoted} {target} --dest models",
        "register a new version": f"eegfs models register {quoted} CHECKPOINT_ID --alias candidate",
        "show in the terminal": f"eegfs models show {quoted}",
    }
