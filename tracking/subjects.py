"""``eegfs subjects sync``: subject documents from participants rows and feature summaries.

The participants.tsv files are parsed by the caller (the CLI uses
``pipelines.participants.read_participants``, the same parser as the feature build); this module
only records the rows, so the two never disagree on missing values, duplicates or ids.

One document per subject in ``subjects`` (unique ``subject_id``, ``NDAR...`` without ``sub-``)::

    {subject_id, sex, age, ehq_total,                      demographics (participants.tsv)
     scores: {p_factor, attention, internalizing, externalizing},   questionnaire labels
     releases: [R1, ...],                                  every release the subject appears in
     sessions: [{challenge, release, source_file}],       recordings seen by the feature build
     quality: {challenge2: {R1: {n_windows, n_good_windows, good_fraction, snapshot_id, created}}},
     feature_summary: {challenge2: {R1: {logabs_mean_alpha: ..., ...}}},   scalar aggregates
     extra: {...other participants.tsv columns...},
     annotations: [...],                                   never touched by a sync
     sources: {participants: [paths]}, created_at, updated_at}

The sync upserts: rerunning it changes nothing, a missing value (``n/a``) never erases a known
one, and annotations are kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from services.ids import SubjectIdError, normalize_subject_id
from tracking.documents import to_document
from tracking.errors import DatasetError, NotFoundError
from tracking.schema import SUBJECTS
from tracking.timeutil import utcnow

log = logging.getLogger(__name__)

DEMOGRAPHICS = ("sex", "age", "ehq_total")
SCORES = ("p_factor", "attention", "internalizing", "externalizing")
#: Row keys that are not copied to ``extra`` (both the parsed names and the raw BIDS ones).
_KNOWN = ("subject_id", "participant_id", "release", "release_number", *DEMOGRAPHICS, *SCORES)
#: Per-subject feature columns kept under ``quality`` (the rest of the scalars go to feature_summary).
QUALITY_COLUMNS = ("n_windows", "n_good_windows", "good_fraction")
_BOOKKEEPING = (
    "subject_id",
    "release",
    "challenge",
    "snapshot_id",
    "event_timestamp",
    "created",
    "source_file",
)


def _key(text: str) -> str:
    # Release and challenge names become field names: no '.' or leading '$'.
    return str(text).replace(".", "_").lstrip("$") or "unknown"


@dataclass
class SubjectSyncReport:
    """What :func:`sync_subjects` did."""

    participants_files: list[Path] = field(default_factory=list)
    participant_rows: int = 0
    feature_rows: int = 0
    subjects: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    messages: list[str] = field(default_factory=list)


def read_subject_features(features_dir: Path):
    """The feature pipeline's per-subject summaries (pandas), or None when there are none.

    Read with pandas from ``<features_dir>/subject_features`` (Parquet, one file per challenge
    and snapshot; dot-files are unfinished writes and skipped). For each (subject, challenge,
    release) only the newest snapshot (by ``created``) is kept.
    """
    import pandas as pd

    root = Path(features_dir) / "subject_features"
    files = (
        sorted(
            p
            for p in root.rglob("*.parquet")
            if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if root.is_dir()
        else []
    )
    if not files:
        return None
    frame = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    missing = [c for c in ("subject_id", "release", "snapshot_id") if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{root}: per-subject feature tables lack column(s) {', '.join(missing)}; found "
            f"{', '.join(map(str, frame.columns[:20]))}. Rebuild them with `eegfs features build`"
        )
    if "challenge" not in frame.columns:
        frame["challenge"] = 0
    frame["subject_id"] = frame["subject_id"].map(normalize_subject_id)
    order = "created" if "created" in frame.columns else "snapshot_id"
    frame = frame.sort_values(order).drop_duplicates(
        ["subject_id", "challenge", "release"], keep="last"
    )
    return frame


def _scalar(value: Any) -> Any:
    """Plain Python value of a pandas/NumPy cell (Timestamp -> datetime, NaN/NaT -> None)."""
    to_datetime = getattr(value, "to_pydatetime", None)
    if callable(to_datetime):
        import pandas as pd

        return None if pd.isna(value) else to_datetime()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        value = item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _participant_rows(source: str, table: Any) -> list[dict[str, Any]]:
    """Rows of ``table`` (a DataFrame or an iterable of dicts) as plain dicts: canonical
    ``subject_id``, ``release``, and None for every missing value (None, NaN, NaT)."""
    records = table.to_dict("records") if callable(getattr(table, "to_dict", None)) else table
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DatasetError(
                f"{source}: participants row {index} is a {type(record).__name__}, expected a "
                "mapping of column -> value (parse the file with pipelines.participants)"
            )
        row = {str(k): _missing_to_none(_scalar(v)) for k, v in record.items()}
        raw_id = row.get("subject_id", row.get("participant_id"))
        if raw_id is None:
            raise DatasetError(
                f"{source}: participants row {index} has no subject_id (or participant_id); found "
                f"keys {sorted(row)}"
            )
        try:
            row["subject_id"] = normalize_subject_id(raw_id)
        except (SubjectIdError, TypeError) as exc:
            raise DatasetError(f"{source}: participants row {index}: {exc}") from exc
        release = row.get("release", row.get("release_number"))
        row["release"] = None if release in (None, "") else str(release)
        rows.append(row)
    return rows


def _missing_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def sync_subjects(
    db: Database,
    participants: Mapping[str | Path, Any] | None = None,
    features_dir: Path | None = None,
) -> SubjectSyncReport:
    """Upsert subject documents from parsed participants rows and per-subject feature summaries.

    Parameters
    ----------
    db : Database
        Tracking database.
    participants : mapping of source -> rows, optional
        For each participants.tsv (the key, recorded as given in ``sources.participants``; pass
        a resolved path), its rows as a DataFrame or a list of dicts, e.g. what
        ``pipelines.participants.read_participants(path, extra_columns=True)`` returns. Keys
        used: ``subject_id`` (or ``participant_id``), ``release`` (or ``release_number``),
        ``sex``, ``age``, ``ehq_total``, the scores; any other key goes to ``extra``. Missing
        values are None or NaN and never erase a known value.
    features_dir : path, optional
        Feature tables root holding ``subject_features/``.

    Raises
    ------
    DatasetError
        For a row without a valid subject id, or an unusable feature table.
    NotFoundError
        When there were neither participants rows nor feature summaries.
    """
    participants = dict(participants or {})
    report = SubjectSyncReport(participants_files=[Path(p) for p in participants])
    # Every file is parsed before anything is written: one bad row leaves the database as it was.
    parsed = {
        str(source): _participant_rows(str(source), table) for source, table in participants.items()
    }
    updates: dict[str, dict[str, Any]] = {}
    for source, rows in parsed.items():
        report.participant_rows += len(rows)
        for row in rows:
            _add_participant_row(_entry(updates, row["subject_id"]), row, source)
    frame = _feature_frame(features_dir, report)
    if frame is not None:
        report.feature_rows = len(frame)
        _add_feature_rows(updates, frame)
    if not updates:
        raise NotFoundError(
            "nothing to sync: give participants.tsv files (--participants) or build the feature "
            "tables first (`eegfs features build`)"
        )
    _write_updates(db, updates, report)
    report.subjects = len(updates)
    return report


def _entry(updates: dict[str, dict[str, Any]], subject_id: str) -> dict[str, Any]:
    """The pending ``{$set, $addToSet}`` of one subject (created empty)."""
    return updates.setdefault(subject_id, {"$set": {}, "$addToSet": {}})


def _add_participant_row(update: dict[str, Any], row: dict[str, Any], source: str) -> None:
    """Demographics, scores and extra columns of one participants row (missing values skipped)."""
    sets = update["$set"]
    for column in DEMOGRAPHICS:
        if row.get(column) is not None:
            sets[column] = row[column]
    for column in SCORES:
        if row.get(column) is not None:
            sets[f"scores.{column}"] = row[column]
    for column, value in row.items():
        if column not in _KNOWN and value is not None:
            sets[f"extra.{_key(column)}"] = value
    adds = update["$addToSet"]
    if row["release"]:
        adds.setdefault("releases", set()).add(row["release"])
    adds.setdefault("sources.participants", set()).add(source)


def _feature_frame(features_dir: Path | None, report: SubjectSyncReport):
    """The per-subject feature summaries, or None (with a message when the directory has none)."""
    if features_dir is None:
        return None
    frame = read_subject_features(features_dir)
    if frame is None:
        report.messages.append(
            f"no per-subject feature summaries under {Path(features_dir) / 'subject_features'} "
            "(run `eegfs features build` first); quality fields not updated"
        )
    return frame


def _add_feature_rows(updates: dict[str, dict[str, Any]], frame) -> None:
    """Quality, scalar feature summaries, releases and sessions from the feature tables."""
    scalar_columns = [
        c
        for c in frame.columns
        if c not in _BOOKKEEPING and c not in QUALITY_COLUMNS and frame[c].dtype.kind in "fiub"
    ]
    for record in frame.to_dict("records"):
        challenge = record.get("challenge")
        chal = f"challenge{int(challenge)}" if challenge else "challenge_unknown"
        release = _key(record["release"])
        update = _entry(updates, record["subject_id"])
        quality = {c: _scalar(record[c]) for c in QUALITY_COLUMNS if c in record}
        quality.update(snapshot_id=record["snapshot_id"], created=_scalar(record.get("created")))
        update["$set"][f"quality.{chal}.{release}"] = quality
        update["$set"][f"feature_summary.{chal}.{release}"] = {
            c: _scalar(record[c]) for c in scalar_columns
        }
        adds = update["$addToSet"]
        adds.setdefault("releases", set()).add(str(record["release"]))
        session = {
            "challenge": _scalar(challenge),
            "release": str(record["release"]),
            "source_file": record.get("source_file"),
        }
        adds.setdefault("sessions", []).append(session)


def _upsert_op(subject_id: str, update: dict[str, Any], now) -> UpdateOne:
    body: dict[str, Any] = {"$setOnInsert": {"created_at": now, "annotations": []}}
    if update["$set"]:
        body["$set"] = {
            k: to_document(v, f"subject {subject_id}.{k}") for k, v in update["$set"].items()
        }
    adds = {}
    for key, values in update["$addToSet"].items():
        items = sorted(values) if isinstance(values, set) else values
        adds[key] = {"$each": to_document(items, f"subject {subject_id}.{key}")}
    if adds:
        body["$addToSet"] = adds
    return UpdateOne({"subject_id": subject_id}, body, upsert=True)


def _write_updates(
    db: Database, updates: dict[str, dict[str, Any]], report: SubjectSyncReport
) -> None:
    """Apply the upserts in one bulk write and count new, changed and unchanged subjects."""
    now = utcnow()
    ops = [_upsert_op(sid, update, now) for sid, update in sorted(updates.items())]
    ids = {"subject_id": {"$in": list(updates)}}
    before = {d["subject_id"]: d for d in db[SUBJECTS].find(ids)}
    db[SUBJECTS].bulk_write(ops, ordered=False)
    after = {d["subject_id"]: d for d in db[SUBJECTS].find(ids)}
    changed = []
    for subject_id in updates:
        if subject_id not in before:
            report.inserted += 1
        elif _strip(before[subject_id]) != _strip(after[subject_id]):
            report.updated += 1
            changed.append(subject_id)
        else:
            report.unchanged += 1
    if changed:
        db[SUBJECTS].update_many({"subject_id": {"$in": changed}}, {"$set": {"updated_at": now}})
    db[SUBJECTS].update_many(
        {**ids, "updated_at": {"$exists": False}}, {"$set": {"updated_at": now}}
    )


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("updated_at",)}


def get_subject(db: Database, subject_id: str) -> dict[str, Any]:
    """The document of one subject (``sub-NDAR...`` or ``NDAR...``).

    Raises
    ------
    NotFoundError
        When no subject has this id.
    ValueError
        When ``subject_id`` is not a subject id.
    """
    sid = normalize_subject_id(subject_id)
    doc = db[SUBJECTS].find_one({"subject_id": sid})
    if doc is None:
        raise NotFoundError(f"no subject {sid}; run `eegfs subjects sync` first")
    return doc


def annotate_subject(db: Database, subject_id: str, text: str, *, author: str = "") -> None:
    """Append an annotation (``{text, author, at}``) to a subject; syncs never remove them."""
    sid = normalize_subject_id(subject_id)
    result = db[SUBJECTS].update_one(
        {"subject_id": sid},
        {"$push": {"annotations": {"text": str(text), "author": author, "at": utcnow()}}},
    )
    if result.matched_count == 0:
        raise NotFoundError(f"no subject {sid}; run `eegfs subjects sync` first")
