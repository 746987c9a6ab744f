"""Read a BIDS ``participants.tsv`` strictly into one row per subject (canonical ids, NaN for ``n/a``).

Every data line must have exactly the header's number of tab-separated fields, a BIDS
``participant_id`` (``sub-`` + letters and digits), a ``sex`` from :data:`SEX_CODES` (or a missing
value) and numbers (or missing values) in the numeric columns. A line that breaks a rule is an
error naming the file and the line (line numbers count every physical line, blank ones included;
blank lines are allowed and skipped). With ``lenient=True`` such lines are skipped instead and
listed in :attr:`ParticipantsFile.skipped`.

Ids are canonicalised by :func:`services.ids.participant_id_to_subject_id` (HBN ``NDAR`` ids in
upper case), so ``sub-ndarko4sft63`` and ``sub-NDARKO4SFT63`` are one subject: rows of one
subject that agree on every value are one row; rows that disagree are a conflict error (both
lines named). Other labels that differ only in case cannot be told apart safely and are an error.

The file is read with the standard library's ``csv`` module (tab-delimited, no quoting, as BIDS
TSV files are) rather than ``pandas.read_csv``: pandas drops blank lines, so the line numbers it
implies are wrong, and it pads short rows with missing values instead of reporting them.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputDataError
from services.ids import SubjectIdError, case_key, participant_id_to_subject_id

log = logging.getLogger(__name__)

#: Demographic columns (model inputs).
DEMOGRAPHIC_COLUMNS = ("age", "sex", "ehq_total")
#: Questionnaire scores: labels, never model inputs (docs/features.md, "Feast repository").
LABEL_COLUMNS = ("p_factor", "attention", "internalizing", "externalizing")
NUMERIC_COLUMNS = ("age", "ehq_total", *LABEL_COLUMNS)
#: Columns of the returned frame (before any extra columns).
COLUMNS = ("subject_id", "release", "sex", *NUMERIC_COLUMNS)
#: participants.tsv columns that the fixed columns above are read from.
_SOURCE_COLUMNS = ("participant_id", "release_number", "sex", *NUMERIC_COLUMNS)
#: Cells that mean "missing" (BIDS writes ``n/a``).
MISSING_VALUES = frozenset({"n/a", "N/A", "NA", ""})
#: Accepted ``sex`` values (any letter case) and the code stored for each (BIDS: male, female,
#: other, or their first letters).
SEX_CODES = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}
#: A decimal number as written in a TSV cell (no ``nan``/``inf``, no ``1_000``).
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
#: Problems listed in one error message (the count says how many more there are).
_MAX_LISTED = 10


@dataclass(frozen=True)
class RowProblem:
    """A data line of participants.tsv that breaks a rule."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ParticipantsFile:
    """What :func:`load_participants` read: the subjects, and the lines skipped (lenient only)."""

    path: Path
    frame: pd.DataFrame
    skipped: list[RowProblem] = field(default_factory=list)

    def warning(self) -> str | None:
        """One message listing the skipped lines, or None when none was skipped."""
        if not self.skipped:
            return None
        return f"{self.path}: skipped {len(self.skipped)} bad row(s) (--lenient): " + _listing(
            self.skipped
        )


@dataclass
class _Row:
    line: int
    raw_id: str
    values: dict  # subject_id, release, sex, numeric columns, extras


class _RowError(ValueError):
    """One line's problem (becomes a :class:`RowProblem`)."""


def load_participants(
    path: str | Path, *, extra_columns: bool = False, lenient: bool = False
) -> ParticipantsFile:
    """One row per subject of ``path``, and the lines skipped.

    Parameters
    ----------
    path : path
        A BIDS participants.tsv (tab-separated, header line; ``n/a``, ``N/A``, ``NA`` or an empty
        cell is a missing value).
    extra_columns : bool
        Also return the file's other columns (e.g. ``site``) after the fixed ones, as stripped
        text or None where missing.
    lenient : bool
        Skip bad lines (listed in ``skipped``) instead of raising.

    Returns
    -------
    ParticipantsFile
        ``frame`` has columns ``subject_id`` (canonical, no ``sub-``), ``release``
        (``release_number`` or empty), ``sex`` (``M``/``F``/``O`` or None), ``age``,
        ``ehq_total``, ``p_factor``, ``attention``, ``internalizing``, ``externalizing``
        (float64, NaN where missing or absent).

    Raises
    ------
    InputDataError
        Unreadable file, no header or no ``participant_id`` column, a repeated column name, or
        (unless ``lenient``) any bad line: all of them are listed, each with its line number.
    """
    path = Path(path)
    header, lines = _read_lines(path)
    rows, problems = _parse_rows(header, lines, extra_columns)
    rows, conflicts = _merge_same_subject(rows)
    problems = sorted(problems + conflicts, key=lambda p: p.line)
    if problems and not lenient:
        raise InputDataError(
            f"{path}: {len(problems)} bad row(s): {_listing(problems)}. Fix: correct those lines "
            "(a BIDS participants.tsv has one row per participant, every row as many "
            "tab-separated fields as the header), or pass --lenient to skip them"
        )
    return ParticipantsFile(path, _frame(rows, header, extra_columns), problems)


def read_participants(
    path: str | Path, *, extra_columns: bool = False, lenient: bool = False
) -> pd.DataFrame:
    """The subjects of ``path``: :func:`load_participants`, with the skipped lines logged as a
    warning (logger ``pipelines.participants``) instead of returned."""
    loaded = load_participants(path, extra_columns=extra_columns, lenient=lenient)
    if loaded.skipped:
        log.warning("%s", loaded.warning())
    return loaded.frame


def _listing(problems: list[RowProblem]) -> str:
    shown = "; ".join(str(p) for p in problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _read_lines(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and every non-blank data line with its physical line number."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
            records = [
                (reader.line_num, [cell.strip() for cell in fields])
                for fields in reader
                if any(cell.strip() for cell in fields)
            ]
    except FileNotFoundError as exc:
        raise InputDataError(f"{path}: no such file; check --participants") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(
            f"{path}: not a readable tab-separated participants file: {exc}. "
            "Fix: use the BIDS participants.tsv of the release (UTF-8 text)"
        ) from exc
    if not records:
        raise InputDataError(
            f"{path}: not a readable tab-separated participants file: it holds no header line. "
            "Fix: use the BIDS participants.tsv of the release"
        )
    (_, header), lines = records[0], records[1:]
    if "participant_id" not in header:
        raise InputDataError(
            f"{path}: no 'participant_id' column (found {header}); expected a BIDS "
            "participants.tsv with a header line"
        )
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputDataError(
            f"{path}: column(s) {repeated} appear more than once in the header; keep one of each"
        )
    return header, lines


def _parse_rows(
    header: list[str], lines: list[tuple[int, list[str]]], extra_columns: bool
) -> tuple[list[_Row], list[RowProblem]]:
    rows, problems = [], []
    for line, fields in lines:
        try:
            rows.append(_parse_row(header, line, fields, extra_columns))
        except _RowError as exc:
            problems.append(RowProblem(line, str(exc)))
    return rows, problems


def _parse_row(header: list[str], line: int, fields: list[str], extra_columns: bool) -> _Row:
    if len(fields) != len(header):
        raise _RowError(
            f"{len(fields)} tab-separated field(s), the header has {len(header)} "
            f"({_shorten(chr(9).join(fields))!r})"
        )
    cells = {c: (None if v in MISSING_VALUES else v) for c, v in zip(header, fields, strict=True)}
    raw_id = cells["participant_id"]
    if raw_id is None:
        raise _RowError("empty participant_id")
    try:
        values: dict = {"subject_id": participant_id_to_subject_id(raw_id)}
    except SubjectIdError as exc:
        raise _RowError(str(exc)) from exc
    values["release"] = cells.get("release_number") or ""
    values["sex"] = _sex(cells.get("sex"))
    for col in NUMERIC_COLUMNS:
        values[col] = _number(col, cells.get(col))
    if extra_columns:
        values.update({c: v for c, v in cells.items() if c not in _SOURCE_COLUMNS})
    return _Row(line, raw_id, values)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sex(value: str | None) -> str | None:
    if value is None:
        return None
    code = SEX_CODES.get(value.lower())
    if code is None:
        raise _RowError(
            f"sex {value!r} is not one of M, F, O, male, female, other (any case) or n/a"
        )
    return code


def _number(col: str, value: str | None) -> float:
    if value is None:
        return math.nan
    if not _NUMBER.fullmatch(value):
        raise _RowError(f"column {col!r} holds {value!r}, expected a number or n/a")
    return float(value)


def _same(a: dict, b: dict) -> list[str]:
    """Columns where two parsed rows disagree (NaN equals NaN)."""

    def equal(x, y) -> bool:
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        return both_nan or x == y

    return [k for k in a if not equal(a[k], b.get(k))]


def _merge_same_subject(rows: list[_Row]) -> tuple[list[_Row], list[RowProblem]]:
    """One row per subject: identical repeats merged, disagreeing ones reported (all lines)."""
    first: dict[str, _Row] = {}  # case_key -> first row
    bad: dict[str, list[RowProblem]] = {}
    for row in rows:
        key = case_key(row.values["subject_id"])
        seen = first.get(key)
        if seen is None:
            first[key] = row
            continue
        if seen.values["subject_id"] != row.values["subject_id"]:
            reason = (
                f"participant_id {row.raw_id!r} differs only in letter case from "
                f"{seen.raw_id!r} on line {seen.line}; outside HBN 'NDAR' ids the right "
                "spelling is unknown: use one"
            )
        else:
            diff = _same(seen.values, row.values)
            if not diff:
                continue  # the same subject written twice, in whatever case: one subject
            reason = (
                f"subject {row.values['subject_id']} is listed more than once with different "
                f"values: this line and line {seen.line} ({row.raw_id!r} / {seen.raw_id!r}) "
                f"disagree on {diff}; ids that differ only in case are one subject"
            )
        bad.setdefault(key, [RowProblem(seen.line, f"conflicts with line {row.line}")])
        bad[key].append(RowProblem(row.line, reason))
    kept = [r for k, r in first.items() if k not in bad]
    return kept, [p for problems in bad.values() for p in problems]


def _frame(rows: list[_Row], header: list[str], extra_columns: bool) -> pd.DataFrame:
    out = pd.DataFrame(
        {"subject_id": pd.Series([r.values["subject_id"] for r in rows], dtype=object)}
    )
    out["release"] = [r.values["release"] for r in rows]
    out["sex"] = pd.Series([r.values["sex"] for r in rows], dtype=object)
    for col in NUMERIC_COLUMNS:
        out[col] = np.array([r.values[col] for r in rows], dtype=np.float64)
    if extra_columns:
        for col in header:
            if col not in _SOURCE_COLUMNS and col not in out.columns:
                out[col] = pd.Series([r.values.get(col) for r in rows], dtype=object)
    return out


__all__ = [
    "COLUMNS",
    "DEMOGRAPHIC_COLUMNS",
    "LABEL_COLUMNS",
    "MISSING_VALUES",
    "SEX_CODES",
    "ParticipantsFile",
    "RowProblem",
    "load_participants",
    "read_participants",
]
