"""Read a BIDS ``participants.tsv`` into one row per subject (canonical ids, NaN for ``n/a``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputDataError
from pipelines.ids import normalize_subject_id

#: Demographic columns (model inputs).
DEMOGRAPHIC_COLUMNS = ("age", "sex", "ehq_total")
#: Questionnaire scores: labels, never model inputs (DESIGN.md, "Labels are not features").
LABEL_COLUMNS = ("p_factor", "attention", "internalizing", "externalizing")
NUMERIC_COLUMNS = ("age", "ehq_total", *LABEL_COLUMNS)


def read_participants(path: str | Path) -> pd.DataFrame:
    """One row per subject of ``path``.

    Returns
    -------
    DataFrame
        Columns ``subject_id`` (canonical, no ``sub-``), ``release`` (``release_number`` or
        empty), ``sex`` (str or None), ``age``, ``ehq_total``, ``p_factor``, ``attention``,
        ``internalizing``, ``externalizing`` (float64, NaN where ``n/a`` or absent).

    Raises
    ------
    InputDataError
        Unreadable file, no ``participant_id`` column, duplicate subjects, non-numeric scores.
    """
    path = Path(path)
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
    if raw["participant_id"].isna().any():
        rows = (raw.index[raw["participant_id"].isna()] + 2).tolist()
        raise InputDataError(f"{path}: empty participant_id on line(s) {rows[:5]}")
    out = pd.DataFrame({"subject_id": [normalize_subject_id(v) for v in raw["participant_id"]]})
    dup = out["subject_id"][out["subject_id"].duplicated()].unique().tolist()
    if dup:
        raise InputDataError(
            f"{path}: subject(s) listed more than once (after removing 'sub-'): {dup[:5]}. "
            "Fix: keep one row per participant"
        )
    release = raw.get("release_number")
    out["release"] = release.fillna("").astype(str).to_numpy() if release is not None else ""
    sex = raw.get("sex")
    out["sex"] = (
        [None if pd.isna(v) else str(v).strip() for v in sex] if sex is not None else None
    )
    for col in NUMERIC_COLUMNS:
        if col not in raw.columns:
            out[col] = np.nan
            continue
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna() & raw[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputDataError(
                f"{path}: column {col!r} line {i + 2} holds {raw[col].iloc[i]!r}, expected a number "
                "or n/a"
            )
        out[col] = values.astype(np.float64).to_numpy()
    return out


__all__ = ["DEMOGRAPHIC_COLUMNS", "LABEL_COLUMNS", "read_participants"]
