"""Helpers of the feature tests: tiny HDF5 files, participants files, settings for a private store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from services.connections import redis_client
from services.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def eeg_like(rng: np.random.Generator, shape: tuple[int, ...], sfreq: float = 100.0) -> np.ndarray:
    """Band-limited noise with a 1/f-ish spectrum and an alpha peak, in volts (float32)."""
    n_t = shape[-1]
    f = np.fft.rfftfreq(n_t, 1 / sfreq)
    amp = 1.0 / np.maximum(f, 1.0) + 0.8 * np.exp(-0.5 * ((f - 10.0) / 1.5) ** 2)
    amp[(f < 0.5) | (f > 48)] = 0.0
    spec = amp * (
        rng.standard_normal((*shape[:-1], f.size)) + 1j * rng.standard_normal((*shape[:-1], f.size))
    )
    x = np.fft.irfft(spec, n=n_t, axis=-1)
    x /= x.std(axis=-1, keepdims=True) + 1e-12
    return (x * 20e-6).astype(np.float32)


@dataclass
class H5Spec:
    """What a tiny test file holds (``write_h5``: options make it bad on purpose)."""

    path: Path
    subjects: list[str]
    data: np.ndarray


def write_h5(
    path: Path,
    *,
    layout: str = "challenge2",
    subjects: list[str] | None = None,
    windows_per_subject: int = 3,
    n_channels: int = 129,
    n_times: int | None = None,
    seed: int = 0,
    data: np.ndarray | None = None,
    shuffle: bool = True,
    chunks: tuple[int, ...] | None | bool = True,
    compression: str | None = "gzip",
    attrs: dict | None = None,
    drop: tuple[str, ...] = (),
    release: str = "R1",
    scale: float = 1.0,
) -> H5Spec:
    c2 = layout == "challenge2"
    n_times = n_times or (400 if c2 else 200)
    subjects = subjects or ["NDARAA000001", "NDARAA000002"]
    n = len(subjects) * windows_per_subject
    rng = np.random.default_rng(seed)
    if data is None:
        data = eeg_like(rng, (n, n_channels, n_times)) * np.float32(scale)
        if n_channels == 129:
            data[:, -1, :] = 0.0  # flat Cz reference, as in HBN
    ids = np.repeat(np.array([s.encode() for s in subjects]), windows_per_subject)
    names = ("data", "targets", "subjects") if c2 else ("eeg", "labels", "subject_ids")
    kw = _dataset_kwargs(data.shape, compression=compression, shuffle=shuffle, chunks=chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if names[0] not in drop:
            f.create_dataset(names[0], data=data, **kw)
        if names[1] not in drop:
            f.create_dataset(
                names[1], data=rng.normal(size=n).astype(np.float32) + (0.0 if c2 else 1.0)
            )
        if names[2] not in drop:
            f.create_dataset(names[2], data=ids)
        if c2 and "p_factors" not in drop:
            f.create_dataset("p_factors", data=rng.normal(size=n).astype(np.float32))
        for k, v in _root_attrs(data.shape, c2, release, attrs).items():
            if v is not None and k not in drop:
                f.attrs[k] = v
    return H5Spec(path, subjects, data)


def _dataset_kwargs(shape, *, compression, shuffle: bool, chunks) -> dict:
    kw: dict = {}
    if compression:
        kw.update(compression=compression, shuffle=shuffle)
    if chunks is True:
        kw["chunks"] = (1, *shape[1:])
    elif chunks:
        kw["chunks"] = chunks
    return kw


def _root_attrs(shape, c2: bool, release: str, attrs: dict | None) -> dict:
    base = {"sfreq": 100.0, "release": release, "n_windows": shape[0]}
    if len(shape) == 3:
        base["n_channels"] = shape[1]
        base["n_times" if c2 else "n_timepoints"] = shape[2]
    base.update(attrs or {})
    return base


def write_participants(
    path: Path, subjects: list[str], *, seed: int = 0, release: str = "R1"
) -> Path:
    """Write a participants.tsv for ``subjects`` (``sub-`` ids, the second one's age ``n/a``)."""
    rng = np.random.default_rng(seed)
    lines = [
        "participant_id\trelease_number\tsex\tage\tehq_total\tp_factor\tattention\tinternalizing\texternalizing"
    ]
    for i, s in enumerate(subjects):
        v = rng.normal(size=4).round(3)
        age = "n/a" if i == 1 else f"{8 + i:.2f}"
        lines.append(
            f"sub-{s}\t{release}\t{'MF'[i % 2]}\t{age}\t{50 + i:.1f}\t"
            + "\t".join(f"{x:.3f}" for x in v)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def module_settings(data_dir: Path, redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=data_dir,
        feature_repo=FEATURE_REPO,
        redis_source="configured",
    )


def flush(url: str) -> None:
    client = redis_client(url)
    try:
        client.flushdb()
    finally:
        client.close()


def assert_same_frames(a, b) -> None:
    """Same columns, dtypes, values and NaN positions (list cells compared element-wise)."""
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        assert x.dtype == y.dtype, col
        if x.dtype == object:
            for u, v in zip(x, y, strict=True):
                if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
                    np.testing.assert_array_equal(u, v, err_msg=col)
                elif isinstance(u, float) and np.isnan(u):
                    assert isinstance(v, float) and np.isnan(v), col
                else:
                    assert u == v, col
        else:
            np.testing.assert_array_equal(x, y, err_msg=col)
