"""Read a BIDS ``participants.tsv`` into one row per subject (canonical ids, NaN for ``n/a``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputDataError
from services.ids import SubjectIdError, normalize_subject_id

#: Demographic columns (model inputs).
DEMOGRAPHIC_COLUMNS = ("age", "sex", "ehq_total")
#: Questionnaire scores: labels, never model inputs (docs/features.md, "Feast repository").
LABEL_COLUMNS = ("p_factor", "attention", "internalizing", "externalizing")
NUMERIC_COLUMNS = ("age", "ehq_total", *LABEL_COLUMNS)
#: Columns of the returned frame (before any extra columns).
COLUMNS = ("subject_id", "release", "sex", *NUMERIC_COLUMNS)
#: participants.tsv columns that the fixed columns above are read from.
_SOURCE_COLUMNS = ("participant_id", "release_number", "sex", *NUMERIC_COLUMNS)


def read_participants(path: str | Path, *, extra_columns: bool = False) -> pd.DataFrame:
    """One row per subject of ``path``.

    Parameters
    ----------
    path : path
        A BIDS participants.tsv (tab-separated, header line; ``n/a``, ``N/A``, ``NA`` or an empty
        cell is a missing value).
    extra_columns : bool
        Also return the file's other columns (e.g. ``site``) after the fixed ones, as stripped
        text or None where missing.

    Returns
    -------
    DataFrame
        Columns ``subject_id`` (canonical, no ``sub-``), ``release`` (``release_number`` or
        empty), ``sex`` (str or None), ``age``, ``ehq_total``, ``p_factor``, ``attention``,
        ``internalizing``, ``externalizing`` (float64, NaN where ``n/a`` or absent).

    Raises
    ------
    InputDataError
        Unreadable file, no ``participant_id`` column, an id that is not a BIDS label,
        duplicate subjects, non-numeric scores.
    """
    path = Path(path)
    raw = _read_tsv(path)
    out = pd.DataFrame({"subject_id": _subject_ids(raw, path)})
    release = raw.get("release_number")
    out["release"] = release.fillna("").astype(str).to_numpy() if release is not None else ""
    sex = raw.get("sex")
    out["sex"] = [None if pd.isna(v) else str(v).strip() for v in sex] if sex is not None else None
    for col in NUMERIC_COLUMNS:
        out[col] = _numeric_column(raw, col, path)
    if extra_columns:
        for col in raw.columns:
            if col in _SOURCE_COLUMNS or col in out.columns:
                continue
            out[col] = [None if pd.isna(v) else str(v).strip() for v in raw[col]]
    return out


def _read_tsv(path: Path) -> pd.DataFrame:
    """Every cell as text (NaN where missing); the file must have a participant_id column."""
    try:
        raw = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            na_values=["n/a", "N/A", "NA", ""],
            keep_default_na=False,
        )
    except FileNotFoundError as exc:
        raise InputDataError(f"{path}: no such file; check --participants") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(
            f"{path}: not a readable tab-separated participants file: {exc}. "
            "Fix: use the BIDS participants.tsv of the release"
        ) from exc
    if "participant_id" not in raw.columns:
        raise InputDataError(
            f"{path}: no 'participant_id' column (found {list(raw.columns)}); expected a BIDS "
            "participants.tsv with a header line"
        )
    return raw


def _subject_ids(raw: pd.DataFrame, path: Path) -> list[str]:
    """Canonical, unique ids of the participant_id column."""
    if raw["participant_id"].isna().any():
        rows = (raw.index[raw["participant_id"].isna()] + 2).tolist()
        raise InputDataError(f"{path}: empty participant_id on line(s) {rows[:5]}")
    ids = []
    for line, value in enumerate(raw["participant_id"], start=2):  # line 1 is the header
        try:
            ids.append(normalize_subject_id(value))
        except SubjectIdError as exc:
            raise InputDataError(f"{path}: line {line}: {exc}") from exc
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique().tolist()
    if dup:
        raise InputDataError(
            f"{path}: subject(s) listed more than once (after removing 'sub-'): {dup[:5]}. "
            "Fix: keep one row per participant"
        )
    return ids


def _numeric_column(raw: pd.DataFrame, col: str, path: Path) -> np.ndarray | float:
    """Column ``col`` as float64 (NaN where missing); NaN when the file has no such column."""
    if col not in raw.columns:
        return np.nan
    values = pd.to_numeric(raw[col], errors="coerce")
    bad = values.isna() & raw[col].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(
            f"{path}: column {col!r} line {i + 2} holds {raw[col].iloc[i]!r}, expected a number "
            "or n/a"
        )
    return values.astype(np.float64).to_numpy()


__all__ = ["COLUMNS", "DEMOGRAPHIC_COLUMNS", "LABEL_COLUMNS", "read_participants"]
