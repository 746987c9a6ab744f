"""The client's value conventions: one kind per Feast type, NaN for every missing value.

Scalar features keep their Feast type as a NumPy dtype (Float32 -> float32; Float64, Int64 and
Int32 -> float64); list features are float32 arrays; strings stay strings. Missing values are NaN
everywhere (Feast gives None online and NaN offline; never None here).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Kinds of feature values (see :func:`feature_kind`).
KINDS = ("f32", "f64", "str", "list", "obj")


def feature_kind(dtype) -> str:
    """``f32``, ``f64`` (also integers), ``str``, ``list`` (float32 arrays) or ``obj``.

    Parameters
    ----------
    dtype : feast.types type
        A Feast field's ``dtype``.
    """
    from feast.types import Array, Float32, Float64, Int32, Int64, String

    if isinstance(dtype, Array):
        return "list"
    if dtype == Float32:
        return "f32"
    if dtype in (Float64, Int64, Int32):
        return "f64"
    if dtype == String:
        return "str"
    return "obj"


def numpy_dtype(kind: str) -> type | None:
    """NumPy dtype of a numeric kind (None for object kinds)."""
    return {"f32": np.float32, "f64": np.float64}.get(kind)


def normalize_column(values, kind: str) -> np.ndarray:
    """Offline values (NumPy/pandas) as the client's column of ``kind``.

    float32/float64 with NaN for numeric kinds; otherwise objects with NaN (never None), list
    cells as float32 arrays.
    """
    dtype = numpy_dtype(kind)
    if dtype is not None:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            return values.astype(dtype, copy=False)
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
            dtype=dtype, na_value=np.nan
        )
    if isinstance(values, np.ndarray):
        out = values.astype(object)
    else:  # element by element: equal-length list cells must not become a 2-D array
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = v
    missing = pd.isna(out)  # elementwise on objects: arrays count as present
    out[missing] = np.nan
    if kind == "list":
        for i in np.flatnonzero(~missing):
            v = out[i]
            if not (isinstance(v, np.ndarray) and v.dtype == np.float32):
                out[i] = np.asarray(v, dtype=np.float32)
    return out


def json_value(value):
    """A client value as JSON: NaN and infinities -> None, arrays -> lists, NumPy -> Python."""
    if isinstance(value, np.ndarray):
        return [None if not np.isfinite(x) else float(x) for x in value]
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = ["KINDS", "feature_kind", "json_value", "normalize_column", "numpy_dtype"]
