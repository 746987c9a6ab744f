"""Subject-level train/validation splits: no subject ever appears on both sides.

Two ways, as in the EEG2025 challenge:

* seeded: the sorted unique subjects are permuted with ``numpy.random.default_rng(seed)`` and
  the first ``round(val_fraction * n_subjects)`` (at least one) go to validation;
* by release: every window of ``val_release`` (e.g. ``R5``) is validation, the others train. A
  subject found in both the held-out release and another one is kept in validation only and its
  training windows are counted in ``Split.n_overlap_dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data import WindowIndex
from training.errors import DataError


@dataclass(frozen=True)
class Split:
    """Positions (into a :class:`WindowIndex`) and subjects of each side."""

    train: np.ndarray  # (n_train,) int64
    val: np.ndarray  # (n_val,) int64
    train_subjects: tuple[str, ...]
    val_subjects: tuple[str, ...]
    how: str  # "seeded" or "release"
    seed: int
    val_release: str | None = None
    n_overlap_dropped: int = 0

    def summary(self) -> dict:
        return {
            "how": self.how,
            "seed": self.seed,
            "val_release": self.val_release,
            "train_windows": int(self.train.size),
            "val_windows": int(self.val.size),
            "train_subjects": len(self.train_subjects),
            "val_subjects": len(self.val_subjects),
            "overlap_windows_dropped": self.n_overlap_dropped,
        }


def split_subjects(
    subjects: np.ndarray, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Seeded subject-level split of the unique values of ``subjects`` into (train, val)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    unique = sorted(set(np.asarray(subjects, dtype=object).tolist()))
    if len(unique) < 2:
        raise DataError(
            f"a subject-level split needs at least 2 subjects, found {len(unique)}; "
            "add files or use --val-release with another release"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = min(max(1, round(val_fraction * len(unique))), len(unique) - 1)
    val = sorted(unique[i] for i in order[:n_val])
    train = sorted(unique[i] for i in order[n_val:])
    return train, val


def make_split(
    index: WindowIndex, *, val_fraction: float = 0.2, seed: int = 0, val_release: str | None = None
) -> Split:
    """Split ``index`` by subject (seeded) or by holding out ``val_release``."""
    subjects = index.subjects
    if val_release is None:
        train_subj, val_subj = split_subjects(subjects, val_fraction=val_fraction, seed=seed)
        in_val = np.isin(subjects, np.array(val_subj, dtype=object))
        train = np.flatnonzero(~in_val)
        val = np.flatnonzero(in_val)
        return Split(train, val, tuple(train_subj), tuple(val_subj), "seeded", seed)

    releases = sorted(set(index.releases.tolist()))
    if val_release not in releases:
        raise DataError(
            f"--val-release {val_release!r} is not among the releases of the input files "
            f"{releases}; pass a file of that release in --data or pick one of these"
        )
    is_val_release = index.releases == val_release
    val_subj = sorted(set(subjects[is_val_release].tolist()))
    in_val_subjects = np.isin(subjects, np.array(val_subj, dtype=object))
    overlap = (~is_val_release) & in_val_subjects
    train = np.flatnonzero(~is_val_release & ~in_val_subjects)
    val = np.flatnonzero(is_val_release)
    if train.size == 0:
        raise DataError(
            f"holding out release {val_release!r} leaves no training windows (releases: "
            f"{releases}); add files of another release"
        )
    train_subj = sorted(set(subjects[train].tolist()))
    return Split(
        train,
        val,
        tuple(train_subj),
        tuple(val_subj),
        "release",
        seed,
        val_release=val_release,
        n_overlap_dropped=int(overlap.sum()),
    )


__all__ = ["Split", "make_split", "split_subjects"]
