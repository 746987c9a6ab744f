"""EEG windows of a :class:`training.index.WindowIndex`, as a torch ``Dataset``, and their order.

The dataset is safe with ``DataLoader(num_workers > 0)``: it holds only paths and small NumPy
arrays (picklable), and every process opens its own read-only h5py handles the first time it
reads (a handle opened before the workers fork is never used by them: the owning process id is
checked). h5py serialises threads, so parallelism comes from worker processes, each limited to
one torch thread by :func:`worker_init_fn`. A whole batch is read by ``__getitems__`` into one
storage (:func:`training.loader.batch_tensors`: a slot of the shared-memory pool inside a
:class:`training.loader.WindowLoader` worker). Only the per-window reads, which must happen
lazily in each worker, are done here; the files are validated by :mod:`training.index`.

Samples are returned in microvolts (``attrs['units']`` overrides the default of volts).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.errors import DataError
from training.index import WindowIndex
from training.loader import StackedSamples, batch_tensors
from training.normalization import ChannelStats, channel_stats

#: h5py raw-data chunk cache per open file. One window is one gzip chunk (~200 kB for 129 x 400
#: float32) and windows are read in random order, so a large cache buys nothing.
H5_CHUNK_CACHE_BYTES = 1 << 20


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (workers are the parallelism)."""
    torch.set_num_threads(1)


class WindowDataset(Dataset):
    """Windows of a :class:`WindowIndex` subset, cropped and normalised, in microvolts.

    Parameters
    ----------
    index : WindowIndex
    positions : array of int, optional
        Positions in ``index`` this dataset serves (a split); default all.
    crop_samples : int, optional
        Length of the returned windows; ``None`` keeps the full window (all files must then have
        the same length).
    random_crop : bool
        Random crop offset (training) instead of the centre crop (validation).
    stats : ChannelStats, optional
        Per-channel normalisation (from training windows only).

    Items are ``(x, y, subject, position)``: ``x`` float32 (n_channels, crop_samples) uV or
    normalised, ``y`` float, ``subject`` str and the position in ``index``. A key may be an int or
    ``(int, crop_seed)`` (see :class:`EpochSampler`), which makes the crop independent of which
    worker reads it.
    """

    def __init__(
        self,
        index: WindowIndex,
        positions: np.ndarray | None = None,
        *,
        crop_samples: int | None = None,
        random_crop: bool = False,
        stats: ChannelStats | None = None,
    ) -> None:
        self.index = index
        self.positions = (
            np.arange(len(index), dtype=np.int64)
            if positions is None
            else np.asarray(positions, dtype=np.int64)
        )
        lengths = {f.n_times for f in index.files}
        if crop_samples is None and len(lengths) > 1:
            raise DataError(
                f"files have different window lengths {sorted(lengths)}; set a crop length"
            )
        if crop_samples is not None and crop_samples > index.n_times:
            raise DataError(
                f"crop of {crop_samples} samples is longer than the shortest window "
                f"({index.n_times} samples at {index.sfreq} Hz); use a shorter crop"
            )
        self.crop_samples = crop_samples
        self.random_crop = random_crop
        self.stats = stats
        self._handles: dict[int, object] = {}
        self._pid: int | None = None

    # -- pickling: handles never travel to another process ----------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_channels(self) -> int:
        return self.index.n_channels

    @property
    def n_times(self) -> int:
        return self.crop_samples or self.index.n_times

    def _dataset(self, file_i: int):
        """This process's (dataset, direct-chunk plan or None) of file ``file_i``."""
        import h5py

        from pipelines.hdf5_chunks import direct_chunk_plan

        pid = os.getpid()
        if self._pid != pid:  # opened in another process (before a fork): never reuse
            self._handles = {}
            self._pid = pid
        handle = self._handles.get(file_i)
        if handle is None:
            info = self.index.files[file_i]
            f = h5py.File(info.path, "r", rdcc_nbytes=H5_CHUNK_CACHE_BYTES)
            ds = f[info.data_name]
            handle = (f, ds, direct_chunk_plan(ds))
            self._handles[file_i] = handle
        return handle[1], handle[2]

    def close(self) -> None:
        """Close this process's handles (they reopen on the next read)."""
        for f, *_ in self._handles.values():
            with contextlib.suppress(Exception):  # a handle of a vanished file: nothing to do
                f.close()
        self._handles = {}

    def _crop_start(self, n_times: int, crop_seed: int | None) -> int:
        if self.crop_samples is None or self.crop_samples >= n_times:
            return 0
        span = n_times - self.crop_samples
        if not self.random_crop:
            return span // 2
        if crop_seed is None:
            return int(torch.randint(0, span + 1, ()).item())
        return int(np.random.default_rng(crop_seed).integers(0, span + 1))

    def _read_into(self, position: int, crop_seed: int | None, out: np.ndarray) -> None:
        """Write the window at ``position`` (cropped, uV, normalised) into ``out`` (C, T) float32.

        Gzip files chunked by whole windows (the EEG2025 caches) are decoded here from the raw
        chunk (:func:`pipelines.hdf5_chunks.decode_chunk`: ISA-L inflate, and only the cropped samples
        unshuffled), about 3x faster than h5py's filter pipeline plus its selection machinery;
        other files are read through h5py. Both give the same values.
        """
        from pipelines.hdf5_chunks import ChunkDecodeError, decode_chunk

        file_i = int(self.index.file_idx[position])
        info = self.index.files[file_i]
        start = self._crop_start(info.n_times, crop_seed)
        stop = start + (self.crop_samples or info.n_times)
        row = int(self.index.rows[position])
        ds, plan = self._dataset(file_i)
        if plan is not None:
            c0 = (row // plan.per) * plan.per
            try:
                mask, raw = ds.id.read_direct_chunk((c0, 0, 0))
                decode_chunk(
                    raw,
                    mask,
                    plan.shuffled,
                    plan.dtype,
                    (plan.per, info.n_channels, info.n_times),
                    out,
                    select=(row - c0, slice(None), slice(start, stop)),
                )
            except (ChunkDecodeError, OSError, RuntimeError, ValueError, KeyError) as exc:
                raise DataError(
                    f"{info.path}: dataset {info.data_name!r}: cannot read window {row} (chunk at "
                    f"window {c0}): {exc}. The file is truncated or corrupt; re-copy or re-export it"
                ) from exc
        else:
            out[...] = ds[row, :, start:stop]
        out *= np.float32(info.to_uv)
        if self.stats is not None:
            # in place, the same float32 operations as ChannelStats.apply
            np.subtract(out, self.stats.mean[:, None], out=out)
            np.divide(out, self.stats.std[:, None], out=out)

    def read_window(self, position: int, crop_seed: int | None = None) -> np.ndarray:
        """Window at ``position`` of the index, cropped, in uV, normalised if stats are set."""
        file_i = int(self.index.file_idx[position])
        n_times = self.crop_samples or self.index.files[file_i].n_times
        out = np.empty((self.index.files[file_i].n_channels, n_times), np.float32)
        self._read_into(position, crop_seed, out)
        return out

    @staticmethod
    def _split_key(key) -> tuple[int, int | None]:
        if isinstance(key, tuple):
            return int(key[0]), int(key[1])
        return int(key), None

    def _sample(self, position: int, x) -> tuple:
        return (
            x,
            float(self.index.targets[position]),
            str(self.index.subjects[position]),
            position,
        )

    def __getitem__(self, key) -> tuple[np.ndarray, float, str, int]:
        i, crop_seed = self._split_key(key)
        position = int(self.positions[i])
        return self._sample(position, self.read_window(position, crop_seed))

    def __getitems__(self, keys: Sequence) -> StackedSamples:
        """A whole batch at once (DataLoader calls this with a batch's keys).

        The windows are written straight into one (B, C, T) float32 tensor, and targets and
        positions beside it in the same storage: inside a DataLoader worker that storage is
        one shared-memory segment, so collating costs no copy and the batch reaches the main
        process as one segment (one file descriptor) instead of one per tensor. The items are
        the same as ``[self[k] for k in keys]``.
        """
        parsed = [self._split_key(k) for k in keys]
        positions = [int(self.positions[i]) for i, _ in parsed]
        ordinal = getattr(keys, "ordinal", None)  # set by WindowLoader's batch sampler
        x, y, pos = batch_tensors(len(keys), self.n_channels, self.n_times, ordinal=ordinal)
        arr = x.numpy()
        for b, (position, (_, seed)) in enumerate(zip(positions, parsed, strict=True)):
            self._read_into(position, seed, arr[b])
        batch = StackedSamples(self._sample(p, arr[b]) for b, p in enumerate(positions))
        y.numpy()[:] = [s[1] for s in batch]  # float -> float32, as torch.tensor(ys) does
        pos.numpy()[:] = positions
        batch.x, batch.y, batch.positions = x, y, pos
        return batch


class EpochSampler(Sampler):
    """Seeded order with a crop seed per item: keys ``(i, crop_seed)``.

    The order and the crops depend only on ``seed`` and the epoch set by :meth:`set_epoch`, never
    on the number of workers, so ``num_workers=0`` and ``num_workers=2`` see the same samples.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int) -> None:
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        crop_seeds = rng.integers(0, 2**31 - 1, size=self.n)
        yield from zip(order.tolist(), crop_seeds.tolist(), strict=True)


def compute_channel_stats(
    index: WindowIndex, positions: np.ndarray, *, max_windows: int = 256, seed: int = 0
) -> ChannelStats:
    """Per-channel statistics from up to ``max_windows`` windows at ``positions`` (training only).

    Whole windows are read (no crop) in uV; a seeded subset keeps this quick on large files.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        raise DataError("no training windows to compute channel statistics from")
    if positions.size > max_windows:
        rng = np.random.default_rng(seed)
        positions = np.sort(rng.choice(positions, size=max_windows, replace=False))
    same_length = len({f.n_times for f in index.files}) == 1
    reader = WindowDataset(index, positions, crop_samples=None if same_length else index.n_times)
    try:
        return channel_stats(reader.read_window(int(p)) for p in positions)
    finally:
        reader.close()


__all__ = [
    "EpochSampler",
    "WindowDataset",
    "compute_channel_stats",
    "worker_init_fn",
]
