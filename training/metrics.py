"""Challenge metrics: NRMSE at window and subject level, and the mean-predictor bound.

Pure NumPy, no I/O. NRMSE = RMSE / std(y_true, ddof=0) on the split being evaluated, as in the
EEG2025 challenge; a constant prediction of the mean of ``y_true`` scores exactly 1.0.
"""

from __future__ import annotations

import math

import numpy as np


def nrmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error divided by the population std of ``y_true``.

    Parameters
    ----------
    y_true, y_pred : np.ndarray, shape (n,)
        Targets and predictions in the same unit (s for response time, score units otherwise).

    Returns
    -------
    float
        NaN when ``y_true`` has fewer than two values or no spread (the ratio is undefined).
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape}, y_pred {y_pred.shape}; expected equal")
    if y_true.size < 2:
        return math.nan
    std = float(np.std(y_true))
    if std == 0.0:
        return math.nan
    return float(np.sqrt(np.mean(np.square(y_true - y_pred))) / std)


def subject_means(values: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per subject.

    Parameters
    ----------
    values : np.ndarray, shape (n,)
    subjects : np.ndarray, shape (n,)
        Subject id of each value.

    Returns
    -------
    ids : np.ndarray, shape (n_subjects,)
        Sorted unique subject ids.
    means : np.ndarray, shape (n_subjects,), float64
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    ids, inverse = np.unique(np.asarray(subjects).astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=ids.size)
    counts = np.bincount(inverse, minlength=ids.size)
    return ids, sums / counts


def subject_nrmse(y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray) -> float:
    """NRMSE of the per-subject mean prediction against the per-subject target.

    Every window of a subject carries the same Challenge 2 target, so the subject's mean target is
    that target; the prediction is the mean over the subject's windows.
    """
    _, t = subject_means(y_true, subjects)
    _, p = subject_means(y_pred, subjects)
    return nrmse(t, p)


def mean_predictor_nrmse(y_true: np.ndarray, train_mean: float) -> float:
    """NRMSE of predicting ``train_mean`` (the training targets' mean) for every sample.

    Equals ``sqrt(1 + ((mean(y_true) - train_mean) / std(y_true))**2)``: 1.0 when the means agree,
    slightly above otherwise. A model far below it on real data is more likely leaking labels than
    brilliant.
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    return nrmse(y_true, np.full_like(y_true, float(train_mean)))


def evaluate(
    y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray, *, train_mean: float
) -> dict[str, float]:
    """All validation figures at once (window and subject level, model and mean predictor)."""
    _, t_subj = subject_means(y_true, subjects)
    return {
        "val_nrmse": nrmse(y_true, y_pred),
        "val_subject_nrmse": subject_nrmse(y_true, y_pred, subjects),
        "val_mean_predictor_nrmse": mean_predictor_nrmse(y_true, train_mean),
        "val_subject_mean_predictor_nrmse": mean_predictor_nrmse(t_subj, train_mean),
        "val_rmse": float(
            np.sqrt(
                np.mean(
                    np.square(
                        np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
                    )
                )
            )
        ),
    }


__all__ = ["evaluate", "mean_predictor_nrmse", "nrmse", "subject_means", "subject_nrmse"]
