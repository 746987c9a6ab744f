"""The report of the last build, and the quality summary of one input for its dataset record.

Every build ends by writing ``<features_dir>/quality_report.json`` atomically (with the build
lock held), which ``eegfs features quality`` shows::

    {format, finished_at, features_dir, accept_failing, thresholds, n_held_back, n_accepted,
     inputs: [{path, snapshot_id, status, challenge, n_windows, n_subjects,
               quality: {snapshot_id, challenge, path, n_subjects, n_promoted, n_held_back,
                         accept_failing, file_failures, reevaluated, promotion_snapshot_id,
                         subjects: {<id>: {reasons, promoted, good_fraction, total_power_uv2}}}
                        or null}],
     participants: {path, snapshot_id, status, n_subjects},
     participants_skipped: [{line, reason}]}

``quality.subjects`` lists the subjects that failed a gate (``promoted`` true: accepted anyway)
and those still held back. :func:`dataset_quality` summarises what the manifest records about one
input file (by content hash) for its MongoDB dataset record (``eegfs datasets register``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines import feature_tables as ft
from pipelines import promotion
from pipelines.errors import FeatureTableError
from pipelines.quality import GateFailure, QualityThresholds
from services.files import atomic_write_text

if TYPE_CHECKING:
    from pipelines.build_snapshot import FileResult
    from pipelines.participants import RowProblem

REPORT_NAME = "quality_report.json"
REPORT_FORMAT = 1


def input_record(result: FileResult) -> dict:
    """One input of the report."""
    return {
        "path": str(result.path),
        "snapshot_id": result.snapshot_id,
        "status": result.status,
        "challenge": result.challenge,
        "n_windows": result.n_windows,
        "n_subjects": result.n_subjects,
        "quality": result.quality.to_dict() if result.quality is not None else None,
    }


def build_report_document(
    *,
    features_dir: Path,
    finished_at: datetime,
    accept_failing: bool,
    thresholds: QualityThresholds,
    inputs: list[dict],
    participants: dict | None,
    participants_skipped: Sequence[RowProblem],
) -> dict:
    """The report document (see the module docstring)."""
    outcomes = [i["quality"] for i in inputs if i["quality"]]
    return {
        "format": REPORT_FORMAT,
        "finished_at": finished_at.isoformat(),
        "features_dir": str(features_dir),
        "accept_failing": accept_failing,
        "thresholds": thresholds.to_dict(),
        "n_held_back": sum(o["n_held_back"] for o in outcomes),
        "n_accepted": sum(
            1 for o in outcomes for v in o["subjects"].values() if v["promoted"] and v["reasons"]
        ),
        "inputs": inputs,
        "participants": None
        if participants is None
        else {k: participants[k] for k in ("path", "snapshot_id", "status", "n_subjects")},
        "participants_skipped": [
            {"line": p.line, "reason": p.reason} for p in participants_skipped
        ],
    }


def write_report(features_dir: Path, document: dict) -> Path:
    """Replace ``quality_report.json`` with ``document`` (atomically)."""
    path = Path(features_dir) / REPORT_NAME
    atomic_write_text(path, json.dumps(document, indent=1, sort_keys=True))
    return path


def load_report(features_dir: Path) -> dict:
    """The report of the last build under ``features_dir``.

    Raises
    ------
    FeatureTableError
        No build has written one, or it is unreadable.
    """
    path = Path(features_dir) / REPORT_NAME
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FeatureTableError(
            f"{path}: no build report; run `eegfs features build` first (each build writes one)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise FeatureTableError(
            f"{path}: unreadable build report ({exc}); the next `eegfs features build` rewrites it"
        ) from exc
    if document.get("format") != REPORT_FORMAT:
        raise FeatureTableError(
            f"{path}: report format {document.get('format')!r}, expected {REPORT_FORMAT}; the "
            "next `eegfs features build` rewrites it"
        )
    return document


def rejected_rows(document: dict) -> list[dict]:
    """Every subject of the report that failed a gate or is held back, one dict each.

    Keys: ``subject_id``, ``challenge``, ``path``, ``snapshot_id``, ``reasons`` (list of str),
    ``promoted`` (bool: accepted anyway or promoted now), ``good_fraction``,
    ``total_power_uv2``, ``reevaluated``.
    """
    rows = []
    for item in document.get("inputs", []):
        outcome = item.get("quality")
        if not outcome:
            continue
        for sid, verdict in outcome["subjects"].items():
            rows.append(
                {
                    "subject_id": sid,
                    "challenge": outcome["challenge"],
                    "path": outcome["path"],
                    "snapshot_id": outcome["snapshot_id"],
                    "reevaluated": outcome["reevaluated"],
                    **verdict,
                }
            )
    return rows


def dataset_quality(features_dir: Path, sha256: str) -> dict | None:
    """What the store's manifest records about the input with content ``sha256``, or None.

    The newest snapshot of that content is summarised: ``snapshot_id``, ``built_at``,
    ``code_version``, ``gates_version``, ``accept_failing``, ``n_subjects``, ``n_promoted``,
    ``n_held_back`` (held back now, after any later promotion), ``file_failures`` and
    ``rejected``: ``[{subject_id, reasons, promoted}]``.
    """
    if not (Path(features_dir) / ft.MANIFEST_NAME).exists():
        return None
    manifest = ft.Manifest.load(features_dir)
    entries = [
        e
        for e in manifest.snapshots.values()
        if e.get("kind") == "hdf5" and (e.get("input") or {}).get("sha256") == sha256
    ]
    if not entries:
        return None
    entry = max(entries, key=lambda e: (e["event_timestamp"], e["snapshot_id"]))
    section = entry.get("quality") or {}
    held = promotion.held_back_subjects(manifest, entry["snapshot_id"])
    rejected = [
        {
            "subject_id": s,
            "reasons": [str(GateFailure.from_dict(r)) for r in v.get("reasons", [])],
            "promoted": s not in held,
        }
        for s, v in (section.get("rejected") or {}).items()
    ]
    n_subjects = int(section.get("n_subjects", entry.get("n_subjects", 0)))
    return {
        "snapshot_id": entry["snapshot_id"],
        "built_at": entry.get("created"),
        "code_version": entry.get("code_version"),
        "gates_version": section.get("gates_version"),
        "accept_failing": bool(section.get("accept_failing")),
        "n_subjects": n_subjects,
        "n_promoted": n_subjects - len(held),
        "n_held_back": len(held),
        "file_failures": [str(GateFailure.from_dict(f)) for f in section.get("file_failures", [])],
        "rejected": rejected,
    }


__all__ = [
    "REPORT_NAME",
    "build_report_document",
    "dataset_quality",
    "input_record",
    "load_report",
    "rejected_rows",
    "write_report",
]
