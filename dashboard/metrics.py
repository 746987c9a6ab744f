"""Which recorded value is a run's "best validation NRMSE", on the server and in Python.

Subject-level NRMSE first (Challenge 2 is scored per subject), then window level; for each,
the run's summary (set when it ends), then its best checkpoint's metrics (kept current while it
runs), then its last epoch. The first value found wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NRMSE_PATHS = (
    "summary.val_subject_nrmse",
    "best_checkpoint.metrics.val_subject_nrmse",
    "last_metrics.val_subject_nrmse",
    "summary.val_nrmse",
    "best_checkpoint.metrics.val_nrmse",
    "last_metrics.val_nrmse",
)


def nrmse_expr() -> dict[str, Any]:
    """Aggregation expression of a run's best validation NRMSE (null when it has none)."""
    return {"$ifNull": [f"${path}" for path in NRMSE_PATHS] + [None]}


def _found(doc: Mapping[str, Any]) -> tuple[str, float] | None:
    for path in NRMSE_PATHS:
        value: Any = doc
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int | float) and math.isfinite(value):
            return path, float(value)
    return None


def best_nrmse(doc: Mapping[str, Any]) -> float | None:
    """The value :func:`nrmse_expr` sorts by, from an experiment document (finite only)."""
    found = _found(doc)
    return None if found is None else found[1]


def nrmse_level(doc: Mapping[str, Any]) -> str | None:
    """``"subject"`` or ``"window"``: the level of :func:`best_nrmse`'s value (None without)."""
    found = _found(doc)
    if found is None:
        return None
    return "subject" if "subject" in found[0] else "window"
