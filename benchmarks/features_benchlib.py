"""Helpers of ``bench_features.py``: synthetic input files, targets, timers and memory probes.

Not a benchmark itself (``make bench`` runs ``bench_*.py`` only).
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import psutil

N_CH = 129
N_T = 200
SFREQ = 100.0


@dataclass(frozen=True)
class Target:
    """One printed target and whether this run met it."""

    name: str
    met: bool


class Targets(list):
    """The targets checked in a run."""

    def check(self, name: str, value: float, limit: float, *, at_least: bool = False) -> str:
        """Record ``value <= limit`` (or ``>=`` with ``at_least``); returns ``"(target ...: met)"``."""
        met = bool(value >= limit) if at_least else bool(value <= limit)
        label = f"{'>=' if at_least else '<='} {limit:g}{name}"
        self.append(Target(label, met))
        return f"(target {label}: {'met' if met else 'MISSED'})"

    def require(self, name: str, met: bool) -> str:
        """Record a yes/no target (such as "no row dropped")."""
        self.append(Target(name, bool(met)))
        return f"({name}: {'met' if met else 'MISSED'})"

    @property
    def missed(self) -> list[str]:
        return [t.name for t in self if not t.met]


def synth_chunk(rng: np.random.Generator, n: int) -> np.ndarray:
    """EEG-like windows (1/f + alpha, 0.5-48 Hz), volts, float32; Cz (last channel) flat."""
    f = np.fft.rfftfreq(N_T, 1 / SFREQ)
    amp = 1.0 / np.maximum(f, 1.0) + 0.8 * np.exp(-0.5 * ((f - 10.0) / 1.5) ** 2)
    amp[(f < 0.5) | (f > 48)] = 0
    spec = amp * (
        rng.standard_normal((n, N_CH, f.size)) + 1j * rng.standard_normal((n, N_CH, f.size))
    )
    x = np.fft.irfft(spec, n=N_T, axis=-1).astype(np.float32)
    x *= np.float32(20e-6) / (x.std(axis=-1, keepdims=True) + np.float32(1e-12))
    x[:, -1] = 0
    return x


def write_input(path: Path, n: int, n_subjects: int, seed: int = 0) -> list[str]:
    """Challenge 1 layout file of ``n`` windows, gzip level 4 + shuffle, one window per chunk."""
    rng = np.random.default_rng(seed)
    subjects = [f"NDARBM{i:06d}" for i in range(n_subjects)]
    ids = np.array([subjects[i * n_subjects // n].encode() for i in range(n)])
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "eeg",
            shape=(n, N_CH, N_T),
            dtype="float32",
            chunks=(1, N_CH, N_T),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        for s in range(0, n, 500):
            ds[s : s + 500] = synth_chunk(rng, min(500, n - s))
        f.create_dataset("labels", data=rng.uniform(0.3, 1.5, n).astype(np.float32))
        f.create_dataset("subject_ids", data=ids)
        f.attrs.update(sfreq=SFREQ, release="RB", n_windows=n, n_channels=N_CH, n_timepoints=N_T)
    return subjects


def write_participants(path: Path, subjects: list[str]) -> None:
    """A participants.tsv of ``subjects`` (release RB, seeded values)."""
    rng = np.random.default_rng(1)
    rows = [
        "participant_id\trelease_number\tsex\tage\tehq_total\tp_factor\tattention\tinternalizing\texternalizing"
    ]
    for i, s in enumerate(subjects):
        v = rng.normal(size=4)
        rows.append(
            f"sub-{s}\tRB\t{'MF'[i % 2]}\t{8 + i % 10}\t{50 + i % 40}\t"
            + "\t".join(f"{x:.3f}" for x in v)
        )
    path.write_text("\n".join(rows) + "\n")


class PeakRSS:
    """Peak growth of this process's resident memory while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        gc.collect()
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn, repeat: int = 1):
    """Best wall time of ``repeat`` calls of ``fn`` and its last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cpu_and_wall(fn) -> tuple[float, float]:
    """Wall and CPU seconds (this process, user + system) of one call of ``fn``."""
    proc = psutil.Process()
    before = proc.cpu_times()
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    after = proc.cpu_times()
    return wall, (after.user - before.user) + (after.system - before.system)


def latencies(fns: dict, calls: int) -> dict[str, tuple[float, float]]:
    """``name -> (p50, p99)`` in ms over ``calls`` calls of each function, called in turn."""
    lat: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up: connections, registry, imports
    for _ in range(calls):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            lat[name].append(time.perf_counter() - t)
    return {
        name: (float(np.percentile(v, 50) * 1e3), float(np.percentile(v, 99) * 1e3))
        for name, v in lat.items()
    }
