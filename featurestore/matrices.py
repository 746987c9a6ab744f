"""Feature matrices: the float32 (n, d) encoding of a service's features, and its column names.

Scalars keep their name; list features become ``name[channel]`` in the file's channel order (from
manifest.json); categoricals become ``<name>_code`` (:data:`CATEGORICAL_CODES`; anything else is
NaN). NaN where a value is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurestore.catalog import ServiceInfo
from featurestore.errors import FeatureStoreError
from featurestore.repo import TABLE_TAG
from featurestore.values import numpy_dtype
from pipelines import feature_tables as ft

#: Categorical features and their numeric codes in the matrices (anything else -> NaN).
CATEGORICAL_CODES: dict[str, dict[str, float]] = {
    "sex": {"M": 1.0, "MALE": 1.0, "F": 0.0, "FEMALE": 0.0},
}

#: A matrix plan: per column, its name and ``(encoding, feature, channel index)`` with encoding
#: ``num``, ``cat`` or ``list``.
Plan = list[tuple[str, tuple[str, str, int]]]


def build_plan(info: ServiceInfo, manifest: ft.Manifest) -> Plan:
    """The matrix columns of ``info`` (list widths from ``manifest``'s channel lists)."""
    plan: Plan = []
    for view, feat, kind in info.features:
        if kind == "list":
            table = (info.views[view].batch_source.tags or {}).get(TABLE_TAG, "")
            channels = manifest.channels.get(Path(table).name)
            if channels is None:
                raise FeatureStoreError(
                    f"list feature {feat!r} of view {view!r}: no {Path(table).name} features were "
                    "built, so its channel count is unknown; run `eegfs features build` with such "
                    "files"
                )
            plan += [(f"{feat}[{ch}]", ("list", feat, i)) for i, ch in enumerate(channels)]
        elif feat in CATEGORICAL_CODES:
            plan.append((f"{feat}_code", ("cat", feat, 0)))
        elif numpy_dtype(kind) is not None:
            plan.append((feat, ("num", feat, 0)))
        else:
            raise FeatureStoreError(f"feature {feat!r} ({kind}) has no numeric encoding")
    return plan


class PlanCache:
    """Matrix plans per service, rebuilt when manifest.json changes (its channel lists set the
    widths) and dropped with the service metadata (:meth:`clear`)."""

    def __init__(self, features_dir: Path) -> None:
        self.features_dir = Path(features_dir)
        self._plans: dict[str, tuple[tuple | None, Plan]] = {}

    def clear(self) -> None:
        self._plans.clear()

    def get(self, info: ServiceInfo) -> Plan:
        try:
            st = (self.features_dir / ft.MANIFEST_NAME).stat()
            stamp: tuple | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        cached = self._plans.get(info.name)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1]
        plan = build_plan(info, ft.Manifest.load(self.features_dir))
        self._plans[info.name] = (stamp, plan)
        return plan


def _categorical_codes(feat: str, values) -> list[float]:
    codes = CATEGORICAL_CODES[feat]
    return [codes.get(v.strip().upper(), np.nan) if isinstance(v, str) else np.nan for v in values]


def fill_matrix(plan: Plan, n: int, column: Callable[[str, str], Any]) -> np.ndarray:
    """The float32 (n, len(plan)) matrix of ``plan`` (NaN where missing).

    ``column(feat, encoding)`` gives feature ``feat``'s n values: numbers for ``num``; strings or
    NaN for ``cat``; float32 arrays of one value per channel, or NaN, for ``list`` (spread over
    that many columns).
    """
    out = np.full((n, len(plan)), np.nan, np.float32)
    for encoding, feat, j, width in _segments(plan):
        values = column(feat, encoding)
        if encoding == "num":
            out[:, j] = values
        elif encoding == "cat":
            out[:, j] = _categorical_codes(feat, values)
        else:
            _spread_lists(out, j, width, feat, values)
    return out


def _segments(plan: Plan) -> list[tuple[str, str, int, int]]:
    """``(encoding, feature, first column, width)`` per feature of ``plan``, in one pass (a list
    feature's channel columns are contiguous; every other feature has one column)."""
    segments: list[tuple[str, str, int, int]] = []
    for j, (_, (encoding, feat, _)) in enumerate(plan):
        last = segments[-1] if segments else None
        if encoding == "list" and last is not None and last[0] == "list" and last[1] == feat:
            segments[-1] = (encoding, feat, last[2], last[3] + 1)
        else:
            segments.append((encoding, feat, j, 1))
    return segments


def _spread_lists(out: np.ndarray, j: int, width: int, feat: str, values) -> None:
    rows = [i for i, v in enumerate(values) if isinstance(v, np.ndarray)]
    for i in rows:
        if values[i].shape != (width,):
            raise FeatureStoreError(
                f"feature {feat!r} holds {values[i].shape[0]} values, expected {width} channels"
            )
    if rows:
        out[rows, j : j + width] = np.stack([values[i] for i in rows])


def frame_matrix(plan: Plan, df: pd.DataFrame) -> np.ndarray:
    """The matrix of a features DataFrame (columns named like the features)."""

    def column(feat: str, encoding: str):
        if encoding == "num":
            return df[feat].to_numpy(dtype=np.float32, na_value=np.nan)
        return df[feat].to_numpy()

    return fill_matrix(plan, len(df), column)


def column_names(plan: Plan) -> list[str]:
    return [name for name, _ in plan]


__all__ = [
    "CATEGORICAL_CODES",
    "Plan",
    "PlanCache",
    "build_plan",
    "column_names",
    "fill_matrix",
    "frame_matrix",
]
