"""Promotion: which rows of a snapshot reach the served tables, and promoting held-back rows later.

The gated tables are the per-subject tables that Feast materializes and historical retrieval reads
(:data:`GATED_TABLES`). A snapshot stages each of them in two parts: the rows of promoted subjects
in the table's own directory, and the rows of held-back subjects (rejected by a gate of
:mod:`pipelines.quality`) under ``quarantine/<table>/`` (read by nothing that serves features).
A held-back subject therefore gets no row in that snapshot, and the values it had before stay
the latest, online and offline.

The manifest entry of the snapshot records the decision (``quality``, see :func:`quality_section`).
Rows held back are evaluated again by every later build of the same input (:func:`reevaluate`);
when they pass, or with ``accept_failing``, they are promoted by a new snapshot of kind
``promotion`` (the quarantined rows, stamped with the new snapshot's id and time): committed
snapshots are never rewritten, so a frame as of an earlier time stays what it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import feature_tables as ft
from pipelines import quality as q
from pipelines.errors import FeatureTableError

#: Tables whose rows pass the gates before they are served (per-subject, per challenge).
GATED_TABLES = (ft.SUBJECT_FEATURES, ft.SUBJECT_RT_LABELS)
#: Directory (under features_dir) of the rows a snapshot holds back.
QUARANTINE = "quarantine"
PROMOTION_KIND = "promotion"


def quarantine_table(table: str) -> str:
    """Name (a directory under features_dir) of ``table``'s held-back rows."""
    return f"{QUARANTINE}/{table}"


@dataclass
class SubjectVerdict:
    """One subject that failed a gate: why, and whether it was promoted anyway."""

    reasons: list[str]
    promoted: bool
    good_fraction: float | None = None
    total_power_uv2: float | None = None

    def to_dict(self) -> dict:
        return {
            "reasons": list(self.reasons),
            "promoted": self.promoted,
            "good_fraction": self.good_fraction,
            "total_power_uv2": self.total_power_uv2,
        }


@dataclass
class QualityOutcome:
    """What the gates decided for one input in one build."""

    snapshot_id: str
    challenge: int
    path: str
    n_subjects: int
    n_promoted: int
    accept_failing: bool = False
    file_failures: list[str] = field(default_factory=list)
    subjects: dict[str, SubjectVerdict] = field(default_factory=dict)  # failing subjects only
    reevaluated: bool = False  # rows held back by an earlier build, evaluated again
    promotion_snapshot_id: str | None = None

    @property
    def held_back(self) -> list[str]:
        return [s for s, v in self.subjects.items() if not v.promoted]

    @property
    def accepted(self) -> list[str]:
        return [s for s, v in self.subjects.items() if v.promoted]

    def to_dict(self) -> dict:
        return {
            "snapshot_id": self.snapshot_id,
            "challenge": self.challenge,
            "path": self.path,
            "n_subjects": self.n_subjects,
            "n_promoted": self.n_promoted,
            "n_held_back": len(self.held_back),
            "accept_failing": self.accept_failing,
            "file_failures": list(self.file_failures),
            "reevaluated": self.reevaluated,
            "promotion_snapshot_id": self.promotion_snapshot_id,
            "subjects": {s: v.to_dict() for s, v in self.subjects.items()},
        }


# --- reading the manifest -----------------------------------------------------------------------
def store_reference(
    manifest: ft.Manifest, challenge: int, exclude: str | None = None
) -> q.StoreReference | None:
    """The challenge's earliest committed input snapshot that passed the per-file gates."""
    rows = [
        (e["event_timestamp"], sid, e)
        for sid, e in manifest.snapshots.items()
        if e.get("kind") == "hdf5"
        and e.get("challenge") == challenge
        and sid != exclude
        and not (e.get("quality") or {}).get("file_failures")
    ]
    if not rows:
        return None
    _, sid, entry = min(rows, key=lambda r: (r[0], r[1]))
    return q.StoreReference(sid, len(entry["channels"]), float(entry["sfreq"]))


def recorded_held_back(entry: dict | None) -> list[str]:
    """Subjects whose rows the snapshot ``entry`` holds in quarantine (promoted later or not)."""
    rejected = ((entry or {}).get("quality") or {}).get("rejected") or {}
    return [s for s, v in rejected.items() if not v.get("promoted")]


def held_back_subjects(manifest: ft.Manifest, snapshot_id: str) -> list[str]:
    """Subjects of ``snapshot_id`` that were held back and are not promoted by a later snapshot."""
    held = recorded_held_back(manifest.snapshots.get(snapshot_id))
    if not held:
        return []
    done = {
        s
        for e in manifest.snapshots.values()
        if e.get("kind") == PROMOTION_KIND and e.get("source_snapshot_id") == snapshot_id
        for s in e.get("subjects", [])
    }
    return [s for s in held if s not in done]


# --- a new snapshot -----------------------------------------------------------------------------
def decide_new(
    frame: pd.DataFrame,
    file_failures: list[q.GateFailure],
    thresholds: q.QualityThresholds,
    accept_failing: bool,
    kept_back: list[str] | None = None,
) -> tuple[q.QualityDecision, list[str]]:
    """The decision for a snapshot's subjects and the list of those promoted.

    ``kept_back`` (a ``--force`` rebuild): the subjects the snapshot held back before; they stay
    held back (they are evaluated again afterwards, and promoted by a new snapshot if they pass),
    and every other subject stays promoted, so that rewriting the snapshot in place changes no
    frame as of an earlier time.
    """
    failures = q.check_subjects(frame, thresholds)
    decision = q.decide(frame["subject_id"], failures, file_failures, accept_failing=accept_failing)
    if kept_back is None:
        return decision, decision.promoted
    held = set(kept_back)
    return decision, [s for s in decision.subjects if s not in held]


def quality_section(
    decision: q.QualityDecision,
    promoted: list[str],
    frame: pd.DataFrame,
    thresholds: q.QualityThresholds,
    reference: q.StoreReference | None,
    previous: dict | None = None,
) -> dict:
    """The ``quality`` field of a snapshot's manifest entry.

    ``rejected`` lists every subject that failed a gate or is held back: its reasons (gate and
    detail), whether it was promoted, and its ``good_fraction`` and ``total_power_uv2``.
    """
    stats = frame.set_index("subject_id")
    promoted_set = set(promoted)
    old = (previous or {}).get("rejected") or {}
    rejected = {}
    for s in decision.subjects:
        fails = decision.failures.get(s, ())
        if not fails and s in promoted_set:
            continue
        reasons = [f.to_dict() for f in fails] or old.get(s, {}).get("reasons", [])
        rejected[s] = {
            "reasons": reasons,
            "promoted": s in promoted_set,
            "good_fraction": _num(stats.at[s, q.GOOD_FRACTION]),
            "total_power_uv2": _num(stats.at[s, q.TOTAL_POWER_COLUMN]),
        }
    return {
        "gates_version": q.GATES_VERSION,
        "thresholds": thresholds.to_dict(),
        "reference": reference.to_dict() if reference else None,
        "accept_failing": decision.accept_failing,
        "file_failures": [f.to_dict() for f in decision.file_failures],
        "n_subjects": len(decision.subjects),
        "n_promoted": len(promoted_set),
        "n_held_back": len(decision.subjects) - len(promoted_set),
        "rejected": rejected,
    }


def _num(value) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


def split_rows(table: pa.Table, promoted: list[str]) -> tuple[pa.Table, pa.Table]:
    """(rows of promoted subjects, the other rows) of a per-subject table."""
    mask = pc.is_in(table["subject_id"], value_set=pa.array(promoted, pa.string()))
    return table.filter(mask), table.filter(pc.invert(mask))


def stage_gated(
    stage: ft.SnapshotStage, table: str, rows: pa.Table, promoted: list[str], challenge: int
) -> None:
    """Stage ``rows`` of gated ``table``: promoted subjects in place, the others in quarantine.

    A part without rows is not written (a table directory never gets an empty file).
    """
    served, held = split_rows(rows, promoted)
    if served.num_rows:
        stage.write_table(table, served, challenge)
    if held.num_rows:
        stage.write_table(quarantine_table(table), held, challenge)


def outcome_from_section(manifest: ft.Manifest, snapshot_id: str) -> QualityOutcome:
    """The :class:`QualityOutcome` recorded for ``snapshot_id`` (rows promoted later included)."""
    entry = manifest.snapshots[snapshot_id]
    section = entry.get("quality") or {}
    held = set(held_back_subjects(manifest, snapshot_id))
    subjects = {
        s: SubjectVerdict(
            [str(q.GateFailure.from_dict(r)) for r in v.get("reasons", [])],
            s not in held,
            v.get("good_fraction"),
            v.get("total_power_uv2"),
        )
        for s, v in (section.get("rejected") or {}).items()
    }
    return QualityOutcome(
        snapshot_id=entry["snapshot_id"],
        challenge=entry.get("challenge"),
        path=(entry.get("input") or {}).get("path", ""),
        n_subjects=int(section.get("n_subjects", entry.get("n_subjects", 0))),
        n_promoted=int(section.get("n_promoted", entry.get("n_subjects", 0))),
        accept_failing=bool(section.get("accept_failing")),
        file_failures=[str(q.GateFailure.from_dict(f)) for f in section.get("file_failures", [])],
        subjects=subjects,
    )


# --- rows held back earlier ---------------------------------------------------------------------
def _read_quarantine(features_dir: Path, entry: dict, table: str, subjects: list[str]):
    rel = (entry.get("files") or {}).get(quarantine_table(table))
    if rel is None:
        return None
    path = Path(features_dir) / rel
    try:
        rows = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise FeatureTableError(
            f"{path}: the held-back rows of snapshot {entry['snapshot_id']} are unreadable "
            f"({exc}). Fix: rebuild that input with `eegfs features build --force`"
        ) from exc
    return split_rows(rows, subjects)[0]


def reevaluate(
    features_dir: Path,
    manifest: ft.Manifest,
    snapshot_id: str,
    thresholds: q.QualityThresholds,
    accept_failing: bool,
    now: datetime,
) -> QualityOutcome | None:
    """Evaluate the rows ``snapshot_id`` still holds back; promote those that may be promoted.

    Returns None when the snapshot holds nothing back. Promoted rows are committed as a new
    snapshot of kind ``promotion`` stamped ``now`` (call with the build lock held).
    """
    held = held_back_subjects(manifest, snapshot_id)
    if not held:
        return None
    entry = manifest.snapshots[snapshot_id]
    rows = _read_quarantine(features_dir, entry, ft.SUBJECT_FEATURES, held)
    if rows is None:
        raise FeatureTableError(
            f"{manifest.path}: snapshot {snapshot_id} holds back {len(held)} subject(s) but lists "
            "no quarantined rows. Fix: rebuild that input with `eegfs features build --force`"
        )
    frame = rows.to_pandas()
    recorded = entry["quality"]["rejected"]
    frame[q.TOTAL_POWER_COLUMN] = [
        np.nan if recorded[s].get("total_power_uv2") is None else recorded[s]["total_power_uv2"]
        for s in frame["subject_id"]
    ]
    reference = store_reference(manifest, entry["challenge"], exclude=snapshot_id)
    file_failures = q.check_file(len(entry["channels"]), float(entry["sfreq"]), reference)
    decision = q.decide(
        frame["subject_id"],
        q.check_subjects(frame, thresholds),
        file_failures,
        accept_failing=accept_failing,
    )
    outcome = QualityOutcome(
        snapshot_id=snapshot_id,
        challenge=entry["challenge"],
        path=entry["input"]["path"],
        n_subjects=len(held),
        n_promoted=len(decision.promoted),
        accept_failing=accept_failing,
        file_failures=[str(f) for f in file_failures],
        reevaluated=True,
    )
    for s in decision.subjects:
        fails = decision.failures.get(s, ())
        if fails or not decision.is_promoted(s):
            outcome.subjects[s] = SubjectVerdict(
                [str(f) for f in fails],
                decision.is_promoted(s),
                recorded[s].get("good_fraction"),
                recorded[s].get("total_power_uv2"),
            )
    if decision.promoted:
        outcome.promotion_snapshot_id = _commit_promotion(
            features_dir, manifest, entry, decision, now
        )
    return outcome


def _restamp(rows: pa.Table, snapshot_id: str, now: datetime) -> pa.Table:
    n = rows.num_rows
    for name, values in (
        ("snapshot_id", pa.array([snapshot_id] * n, pa.string())),
        ("event_timestamp", ft.timestamp_array(now, n)),
        ("created", ft.timestamp_array(now, n)),
    ):
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, rows.schema.field(i), values.cast(rows.schema.field(i).type))
    metadata = dict(rows.schema.metadata or {})
    if b"eegfs.snapshot_id" in metadata:
        metadata[b"eegfs.snapshot_id"] = snapshot_id.encode()
    return rows.replace_schema_metadata(metadata)


def _commit_promotion(
    features_dir: Path,
    manifest: ft.Manifest,
    source: dict,
    decision: q.QualityDecision,
    now: datetime,
) -> str:
    """Commit the quarantined rows of ``decision.promoted`` as a new ``promotion`` snapshot."""
    promoted = sorted(decision.promoted)
    challenge = source["challenge"]
    sid = f"{ft.challenge_dir(challenge)}_" + ft.short_hash(
        {"promotes": source["snapshot_id"], "subjects": promoted}
    )
    with ft.staged_snapshot(features_dir, sid) as stage:
        for table in GATED_TABLES:
            rows = _read_quarantine(features_dir, source, table, promoted)
            if rows is not None and rows.num_rows:
                stage.write_table(table, _restamp(rows, sid, now), challenge)
        stage.commit(
            manifest,
            {
                "kind": PROMOTION_KIND,
                "challenge": challenge,
                "source_snapshot_id": source["snapshot_id"],
                "input": dict(source["input"]),
                "code_version": source.get("code_version"),
                "params": source.get("params", {}),
                "created": now.isoformat(),
                "event_timestamp": now.isoformat(),
                "release": source.get("release"),
                "sfreq": source.get("sfreq"),
                "channels": list(source.get("channels", [])),
                "n_subjects": len(promoted),
                "subjects": promoted,
                "accept_failing": decision.accept_failing,
                "accepted": {
                    s: [f.to_dict() for f in decision.failures[s]] for s in decision.accepted
                },
            },
        )
    return sid


__all__ = [
    "GATED_TABLES",
    "PROMOTION_KIND",
    "QUARANTINE",
    "QualityOutcome",
    "SubjectVerdict",
    "decide_new",
    "held_back_subjects",
    "outcome_from_section",
    "quality_section",
    "quarantine_table",
    "recorded_held_back",
    "reevaluate",
    "split_rows",
    "stage_gated",
    "store_reference",
]
