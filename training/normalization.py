"""Per-channel normalisation whose statistics come from training windows only.

Pure NumPy kernels: no I/O here. :func:`training.data.compute_channel_stats` feeds them windows
read from the training split, so validation windows never influence the statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: A channel whose standard deviation is below this (in the data's unit, uV) is treated as flat:
#: it is centred but not scaled. In HBN recordings Cz is the reference and is exactly flat.
FLAT_STD = 1e-6


@dataclass(frozen=True)
class ChannelStats:
    """Mean and standard deviation per channel.

    Attributes
    ----------
    mean, std : np.ndarray, shape (n_channels,), float32
        In the unit the dataset returns (uV). ``std`` is already floored: flat channels hold 1.0.
    n_windows : int
        How many training windows the statistics were computed from.
    """

    mean: np.ndarray
    std: np.ndarray
    n_windows: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``x`` of shape (..., n_channels, n_times) channel by channel (float32)."""
        return ((x - self.mean[:, None]) / self.std[:, None]).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        """Plain lists, safe for JSON and ``torch.load(weights_only=True)``."""
        return {
            "mean": self.mean.astype(float).tolist(),
            "std": self.std.astype(float).tolist(),
            "n_windows": int(self.n_windows),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChannelStats:
        return cls(
            mean=np.asarray(d["mean"], dtype=np.float32),
            std=np.asarray(d["std"], dtype=np.float32),
            n_windows=int(d["n_windows"]),
        )


def channel_stats(windows: Iterable[np.ndarray], *, flat_std: float = FLAT_STD) -> ChannelStats:
    """Per-channel mean and population standard deviation over all samples of ``windows``.

    Parameters
    ----------
    windows : iterable of np.ndarray, each of shape (n_channels, n_times)
        Any number of windows (the time length may vary). Accumulated in float64 around the first
        window's channel means, so large offsets do not cancel catastrophically.
    flat_std : float
        Channels with a smaller standard deviation get ``std = 1`` (centred only).

    Returns
    -------
    ChannelStats
        ``mean``/``std`` of shape (n_channels,), float32.
    """
    shift = total = total_sq = None
    count = 0
    n_windows = 0
    for window in windows:
        w = np.asarray(window, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(f"expected windows of shape (n_channels, n_times), got {w.shape}")
        if shift is None:
            shift = w.mean(axis=-1)
            total = np.zeros_like(shift)
            total_sq = np.zeros_like(shift)
        elif w.shape[0] != shift.shape[0]:
            raise ValueError(
                f"window {n_windows} has {w.shape[0]} channels, earlier ones {shift.shape[0]}"
            )
        d = w - shift[:, None]
        total += d.sum(axis=-1)
        total_sq += np.square(d).sum(axis=-1)
        count += w.shape[-1]
        n_windows += 1
    if shift is None or count == 0:
        raise ValueError("cannot compute channel statistics from zero windows")
    mean_d = total / count
    var = np.maximum(total_sq / count - np.square(mean_d), 0.0)
    std = np.sqrt(var)
    std = np.where(std < flat_std, 1.0, std)
    return ChannelStats(
        mean=(shift + mean_d).astype(np.float32),
        std=std.astype(np.float32),
        n_windows=n_windows,
    )


__all__ = ["FLAT_STD", "ChannelStats", "channel_stats"]
