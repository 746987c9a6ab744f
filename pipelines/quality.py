"""Data-quality gates: which rows of a feature table may be promoted (served).

Pure functions (tables and numbers in, decisions with reasons out; no I/O), used by the build
before a snapshot's rows reach the tables that Feast materializes and historical retrieval reads,
and meant for every other writer of those tables (a ``features push`` must pass the same gates).

Gates and their defaults (:class:`QualityThresholds`), documented in docs/features.md:

========================  ==========================================================================
``finite``                every scalar feature of the subject's row is finite (per-channel lists may
                          hold NaN: that is how a flat channel such as the Cz reference is stored)
``good_fraction``         good windows / windows >= 0.5 (a good window is finite with at most 10 %
                          flat non-reference channels)
``total_power``           median over the subject's finite windows of the median over the window's
                          non-flat channels of the total 1-45 Hz power, within [0.01, 1e5] uV^2:
                          catches microvolts stored as volts (about 1e12 times too much) and volts
                          stored as microvolts (every channel then looks flat: no value at all)
``channel_count``         per file: the channel count of the challenge's earlier snapshots
``sfreq``                 per file: the sampling rate of the challenge's earlier snapshots
========================  ==========================================================================

A row that fails any gate is rejected. ``accept_failing`` promotes rejected rows anyway, except
for the gates in :data:`BLOCKING_GATES`: rows with another channel count cannot share a table with
the store's (their per-channel lists would not fit the feature matrices).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

#: Version of the gate definitions (recorded with every decision).
GATES_VERSION = 1
FINITE = "finite"
GOOD_FRACTION = "good_fraction"
TOTAL_POWER = "total_power"
CHANNEL_COUNT = "channel_count"
SFREQ = "sfreq"
#: Every gate, in the order reasons are listed.
GATES = (FINITE, GOOD_FRACTION, TOTAL_POWER, CHANNEL_COUNT, SFREQ)
#: Gates whose failures ``accept_failing`` does not override.
BLOCKING_GATES = frozenset({CHANNEL_COUNT})
#: Column of the quality frame holding each subject's total-power statistic (uV^2).
TOTAL_POWER_COLUMN = "total_power_uv2"
#: Columns that are bookkeeping or checked by their own gate, never by ``finite``.
_NOT_FEATURES = frozenset(
    {"challenge", "n_windows", "n_good_windows", GOOD_FRACTION, TOTAL_POWER_COLUMN}
)


@dataclass(frozen=True)
class QualityThresholds:
    """Thresholds of the gates (all have the documented defaults).

    Parameters
    ----------
    min_good_fraction : float
        Smallest accepted fraction of good windows per subject.
    min_total_power_uv2, max_total_power_uv2 : float
        Accepted range of the subject's median total power (uV^2).
    """

    min_good_fraction: float = 0.5
    min_total_power_uv2: float = 0.01
    max_total_power_uv2: float = 1e5

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_good_fraction <= 1.0:
            raise ValueError(f"min_good_fraction must be in [0, 1], got {self.min_good_fraction}")
        lo, hi = self.min_total_power_uv2, self.max_total_power_uv2
        if not (0.0 <= lo < hi):
            raise ValueError(
                f"need 0 <= min_total_power_uv2 < max_total_power_uv2, got [{lo}, {hi}] uV^2"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateFailure:
    """One gate a row (or a whole file) failed, and what was found."""

    gate: str
    detail: str

    def __str__(self) -> str:
        return f"{self.gate}: {self.detail}"

    def to_dict(self) -> dict:
        return {"gate": self.gate, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping) -> GateFailure:
        return cls(str(data["gate"]), str(data["detail"]))


@dataclass(frozen=True)
class StoreReference:
    """What the challenge's earlier snapshots hold: the file-level gates compare with it."""

    snapshot_id: str
    n_channels: int
    sfreq: float

    def to_dict(self) -> dict:
        return asdict(self)


def check_file(
    n_channels: int, sfreq: float, reference: StoreReference | None
) -> list[GateFailure]:
    """Failures of the per-file gates (``channel_count``, ``sfreq``); none without a reference.

    Parameters
    ----------
    n_channels : int
        Channels of the file.
    sfreq : float
        Its sampling rate (Hz).
    reference : StoreReference or None
        The challenge's earlier snapshots; None when the file is the challenge's first.
    """
    if reference is None:
        return []
    out = []
    if int(n_channels) != reference.n_channels:
        out.append(
            GateFailure(
                CHANNEL_COUNT,
                f"{n_channels} channels, the store's earlier snapshots of this challenge have "
                f"{reference.n_channels} ({reference.snapshot_id})",
            )
        )
    if not math.isclose(float(sfreq), reference.sfreq, rel_tol=1e-9):
        out.append(
            GateFailure(
                SFREQ,
                f"{sfreq:g} Hz, the store's earlier snapshots of this challenge have "
                f"{reference.sfreq:g} Hz ({reference.snapshot_id})",
            )
        )
    return out


def scalar_feature_columns(frame: pd.DataFrame) -> list[str]:
    """The columns the ``finite`` gate checks by default: float columns that are features."""
    return [
        c
        for c in frame.columns
        if pd.api.types.is_float_dtype(frame[c].dtype) and c not in _NOT_FEATURES
    ]


def check_subjects(
    frame: pd.DataFrame,
    thresholds: QualityThresholds | None = None,
    *,
    feature_columns: Sequence[str] | None = None,
) -> dict[str, list[GateFailure]]:
    """Failures of the per-subject gates, for each subject that fails one.

    Parameters
    ----------
    frame : DataFrame
        One row per subject: ``subject_id``, ``good_fraction``, ``total_power_uv2`` (see
        :func:`subject_total_power`; NaN when no finite window has a non-flat channel) and the
        feature columns.
    thresholds : QualityThresholds, optional
    feature_columns : sequence of str, optional
        Columns that must be finite; default :func:`scalar_feature_columns`.

    Returns
    -------
    dict
        subject id -> failures (in :data:`GATES` order); subjects that pass are absent.
    """
    th = thresholds or QualityThresholds()
    missing = [c for c in ("subject_id", GOOD_FRACTION, TOTAL_POWER_COLUMN) if c not in frame]
    if missing:
        raise ValueError(
            f"quality frame lacks column(s) {missing} (has {list(frame.columns)}); build it with "
            "the subject rows and pipelines.quality.subject_total_power"
        )
    cols = list(feature_columns) if feature_columns is not None else scalar_feature_columns(frame)
    values = frame[cols].to_numpy(dtype=np.float64) if cols else np.zeros((len(frame), 0))
    out: dict[str, list[GateFailure]] = {}
    for i, sid in enumerate(frame["subject_id"].astype(str)):
        bad_cols = [c for c, v in zip(cols, values[i], strict=True) if not math.isfinite(v)]
        failures = _subject_failures(
            bad_cols,
            float(frame[GOOD_FRACTION].iloc[i]),
            float(frame[TOTAL_POWER_COLUMN].iloc[i]),
            th,
        )
        if failures:
            out[sid] = failures
    return out


def _subject_failures(
    bad_cols: list[str], good_fraction: float, power: float, th: QualityThresholds
) -> list[GateFailure]:
    out = []
    if bad_cols:
        shown = ", ".join(bad_cols[:4]) + (
            f" and {len(bad_cols) - 4} more" if len(bad_cols) > 4 else ""
        )
        out.append(GateFailure(FINITE, f"{len(bad_cols)} feature(s) not finite: {shown}"))
    if not (good_fraction >= th.min_good_fraction):  # NaN fails too
        out.append(
            GateFailure(
                GOOD_FRACTION,
                f"{good_fraction:.2f} of the windows are good, at least "
                f"{th.min_good_fraction:g} needed (flat or non-finite windows)",
            )
        )
    if not math.isfinite(power):
        out.append(
            GateFailure(
                TOTAL_POWER,
                "no finite window with a non-flat channel to measure (all flat or NaN/inf; "
                "volts stored as microvolts look flat)",
            )
        )
    elif not th.min_total_power_uv2 <= power <= th.max_total_power_uv2:
        hint = "microvolts stored as volts?" if power > th.max_total_power_uv2 else "wrong units?"
        out.append(
            GateFailure(
                TOTAL_POWER,
                f"median total 1-45 Hz power {power:.3g} uV^2 outside "
                f"[{th.min_total_power_uv2:.3g}, {th.max_total_power_uv2:.3g}] ({hint})",
            )
        )
    return out


def window_total_power(total_power: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Per window: median over its non-flat channels of the total power (NaN when none).

    Parameters
    ----------
    total_power : ndarray, shape (n_windows, n_channels)
        ``BandpowerResult.total_power`` (uV^2; NaN for non-finite windows).
    flat : ndarray, shape (n_windows, n_channels), bool

    Returns
    -------
    ndarray, shape (n_windows,), float32
    """
    # sort once (NaN last) and pick the middle of each row's valid values: np.nanmedian takes
    # several times longer on (windows, channels) chunks, and this runs on every chunk
    values = np.sort(np.where(flat, np.nan, np.asarray(total_power, np.float64)), axis=1)
    n_valid = (~np.isnan(values)).sum(axis=1)
    rows = np.arange(values.shape[0])
    hi = values[rows, np.maximum(n_valid, 1) // 2]
    lo = values[rows, np.maximum(n_valid - 1, 0) // 2]
    return np.where(n_valid > 0, (lo + hi) / 2, np.nan).astype(np.float32)


def subject_total_power(window_power: np.ndarray, codes: np.ndarray, n_subjects: int) -> np.ndarray:
    """Per subject: median over its windows of :func:`window_total_power` (NaN ones ignored).

    Parameters
    ----------
    window_power : ndarray, shape (n_windows,)
    codes : ndarray, shape (n_windows,), int
        Subject index of each window.
    n_subjects : int

    Returns
    -------
    ndarray, shape (n_subjects,), float64 (NaN for a subject without a measurable window)
    """
    out = np.full(n_subjects, np.nan)
    for s in range(n_subjects):
        v = window_power[(codes == s) & np.isfinite(window_power)]
        if v.size:
            out[s] = float(np.median(v))
    return out


@dataclass(frozen=True)
class QualityDecision:
    """Which subjects of one file are promoted, and why the others are not.

    ``failures`` maps every subject that failed a gate (per-file failures included) to its
    failures; a failing subject is promoted only with ``accept_failing`` and no blocking failure.
    """

    subjects: tuple[str, ...]
    failures: Mapping[str, tuple[GateFailure, ...]] = field(default_factory=dict)
    file_failures: tuple[GateFailure, ...] = ()
    accept_failing: bool = False

    def is_promoted(self, subject_id: str) -> bool:
        fails = self.failures.get(subject_id)
        if not fails:
            return True
        return self.accept_failing and not any(f.gate in BLOCKING_GATES for f in fails)

    @property
    def promoted(self) -> list[str]:
        return [s for s in self.subjects if self.is_promoted(s)]

    @property
    def held_back(self) -> list[str]:
        return [s for s in self.subjects if not self.is_promoted(s)]

    @property
    def accepted(self) -> list[str]:
        """Subjects that failed a gate but are promoted (``accept_failing``)."""
        return [s for s in self.subjects if s in self.failures and self.is_promoted(s)]


def decide(
    subjects: Iterable[str],
    subject_failures: Mapping[str, Sequence[GateFailure]],
    file_failures: Sequence[GateFailure] = (),
    *,
    accept_failing: bool = False,
) -> QualityDecision:
    """Combine per-subject and per-file failures into one :class:`QualityDecision`."""
    ids = tuple(dict.fromkeys(str(s) for s in subjects))
    failures = {}
    for s in ids:
        fails = (*file_failures, *subject_failures.get(s, ()))
        if fails:
            failures[s] = tuple(sorted(fails, key=lambda f: GATES.index(f.gate)))
    return QualityDecision(ids, failures, tuple(file_failures), accept_failing)


__all__ = [
    "BLOCKING_GATES",
    "CHANNEL_COUNT",
    "FINITE",
    "GATES",
    "GATES_VERSION",
    "GOOD_FRACTION",
    "SFREQ",
    "TOTAL_POWER",
    "TOTAL_POWER_COLUMN",
    "GateFailure",
    "QualityDecision",
    "QualityThresholds",
    "StoreReference",
    "check_file",
    "check_subjects",
    "decide",
    "scalar_feature_columns",
    "subject_total_power",
    "window_total_power",
]
