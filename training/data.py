"""EEG windows from HDF5 files of either EEG2025 layout, as a torch ``Dataset``.

The dataset is safe with ``DataLoader(num_workers > 0)``: it holds only paths and small NumPy
arrays (picklable), and every process opens its own read-only h5py handles the first time it
reads (a handle opened before the workers fork is never used by them: the owning process id is
checked). h5py serialises threads, so parallelism comes from worker processes, each limited to
one torch thread by :func:`worker_init_fn`. :class:`training.loader.WindowLoader` (a ``DataLoader``)
has its workers return batches through a reused shared-memory pool instead of a new segment per
batch.

Files are validated and described by :func:`pipelines.hdf5_io.open_windows` (layout detection,
shapes, attributes, channel names, units, subject ids, labels): Challenge 2 files (``data``,
``subjects``, labels ``externalizing`` = ``targets`` and ``p_factor`` = ``p_factors``) and
Challenge 1 files (``eeg``, ``subject_ids``, label ``response_time`` = ``labels``). Only the
per-window reads, which must happen lazily in each worker, are done here.

Samples are returned in microvolts (``attrs['units']`` overrides the default of volts).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.errors import DataError
from training.loader import WindowBatch, batch_tensors
from training.normalization import ChannelStats, channel_stats

#: h5py raw-data chunk cache per open file. One window is one gzip chunk (~200 kB for 129 x 400
#: float32) and windows are read in random order, so a large cache buys nothing.
H5_CHUNK_CACHE_BYTES = 1 << 20

#: Target label used when none is given, per layout (label names as in pipelines.hdf5_layout).
DEFAULT_TARGETS = {"challenge2": "externalizing", "challenge1": "response_time"}


@dataclass(frozen=True)
class FileInfo:
    """What :func:`build_index` learnt about one file."""

    path: str
    layout: str
    data_name: str
    target_name: str
    n_windows: int
    n_channels: int
    n_times: int
    sfreq: float
    release: str
    to_uv: float
    ch_names: tuple[str, ...] = field(repr=False)
    n_missing_target: int = 0

    def summary(self) -> dict:
        return {
            "path": self.path,
            "layout": self.layout,
            "target": self.target_name,
            "release": self.release,
            "n_windows": self.n_windows,
            "n_channels": self.n_channels,
            "n_times": self.n_times,
            "sfreq": self.sfreq,
            "dropped_missing_target": self.n_missing_target,
        }


@dataclass(frozen=True)
class WindowIndex:
    """Every usable window of a set of files: where it is, whose it is and its target.

    Arrays have one entry per kept window (windows with a missing target are dropped and counted
    in ``FileInfo.n_missing_target``).
    """

    files: tuple[FileInfo, ...]
    file_idx: np.ndarray  # (N,) int32
    rows: np.ndarray  # (N,) int64, row inside the file
    subjects: np.ndarray  # (N,) object (str, NDAR... form)
    targets: np.ndarray  # (N,) float32
    releases: np.ndarray  # (N,) object (str)
    dropped_subjects: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def n_channels(self) -> int:
        return self.files[0].n_channels

    @property
    def n_times(self) -> int:
        return min(f.n_times for f in self.files)

    @property
    def sfreq(self) -> float:
        return self.files[0].sfreq

    @property
    def n_dropped(self) -> int:
        return sum(f.n_missing_target for f in self.files)

    def summary(self) -> dict:
        return {
            "files": [f.summary() for f in self.files],
            "n_windows": len(self),
            "n_subjects": len(set(self.subjects.tolist())),
            "dropped_missing_target": self.n_dropped,
            "subjects_without_target": list(self.dropped_subjects),
        }


def read_file_info(
    path: str | os.PathLike[str], *, target: str | None = None, layout: str | None = None
) -> tuple[FileInfo, np.ndarray, np.ndarray]:
    """Validate one file (with :func:`pipelines.hdf5_io.open_windows`) and read its labels.

    Parameters
    ----------
    path : path
    target : str, optional
        Label name (``externalizing`` or ``p_factor`` for Challenge 2 files, ``response_time`` for
        Challenge 1 files); default per layout (:data:`DEFAULT_TARGETS`).
    layout : str, optional
        ``challenge1`` or ``challenge2``; default: detected.

    Returns
    -------
    info : FileInfo
    subjects : np.ndarray, shape (n_windows,), object (str, ``NDAR...`` form)
    targets : np.ndarray, shape (n_windows,), float32 (NaN where missing)
    """
    from pipelines.errors import InputDataError
    from pipelines.hdf5_io import open_windows
    from pipelines.hdf5_layout import KNOWN_LAYOUTS

    lay = None
    if layout is not None:
        if layout not in KNOWN_LAYOUTS:
            raise DataError(f"unknown layout {layout!r}; expected one of {sorted(KNOWN_LAYOUTS)}")
        lay = KNOWN_LAYOUTS[layout]
    try:
        windows = open_windows(path, layout=lay)
    except InputDataError as exc:
        raise DataError(str(exc)) from exc
    with windows:
        name = windows.layout.name
        target_name = target or DEFAULT_TARGETS.get(name)
        if target_name not in windows.labels:
            raise DataError(
                f"{windows.path}: no target {target_name!r} in this {name} file; it has "
                f"{sorted(windows.labels) or 'no labels'} (datasets "
                f"{dict(windows.layout.labels)}). Pass --target with one of them"
            )
        targets = np.asarray(windows.labels[target_name], dtype=np.float32)
        info = FileInfo(
            path=str(windows.path),
            layout=name,
            data_name=windows.layout.data,
            target_name=target_name,
            n_windows=windows.n_windows,
            n_channels=windows.n_channels,
            n_times=windows.n_times,
            sfreq=float(windows.sfreq),
            release=windows.release or Path(path).stem,
            to_uv=float(windows.to_uv),
            ch_names=tuple(windows.channel_names),
            n_missing_target=int(np.isnan(targets).sum()),
        )
        subjects = np.array(windows.subject_ids, dtype=object)
    return info, subjects, targets


def build_index(
    paths: Sequence[str | os.PathLike[str]], *, target: str | None = None, layout: str | None = None
) -> WindowIndex:
    """Index the usable windows of ``paths``; windows whose target is NaN are dropped and counted.

    Raises
    ------
    DataError
        A file is missing or unreadable, files disagree on channels or sampling rate, or no
        window is left.
    """
    if not paths:
        raise DataError("no input files given; pass --data FILE [FILE ...]")
    infos: list[FileInfo] = []
    file_idx, rows, subjects, targets, releases = [], [], [], [], []
    all_subjects: set[str] = set()
    for i, path in enumerate(paths):
        info, subj, targ = read_file_info(path, target=target, layout=layout)
        if infos:
            first = infos[0]
            if info.ch_names != first.ch_names:
                raise DataError(
                    f"{info.path}: channels {info.n_channels} ({info.ch_names[:3]}...) differ from "
                    f"{first.path} ({first.n_channels}, {first.ch_names[:3]}...); files with "
                    "different channel sets or orders are not mixed: train on one montage"
                )
            if info.sfreq != first.sfreq:
                raise DataError(
                    f"{info.path}: sfreq {info.sfreq} Hz differs from {first.path} "
                    f"({first.sfreq} Hz); resample to one rate first"
                )
        infos.append(info)
        all_subjects.update(subj.tolist())
        keep = ~np.isnan(targ)
        kept = np.flatnonzero(keep)
        file_idx.append(np.full(kept.shape[0], i, dtype=np.int32))
        rows.append(kept.astype(np.int64))
        subjects.append(subj[keep])
        targets.append(targ[keep])
        releases.append(np.full(kept.shape[0], info.release, dtype=object))
    index = WindowIndex(
        files=tuple(infos),
        file_idx=np.concatenate(file_idx),
        rows=np.concatenate(rows),
        subjects=np.concatenate(subjects),
        targets=np.concatenate(targets).astype(np.float32),
        releases=np.concatenate(releases),
        dropped_subjects=(),
    )
    kept_subjects = set(index.subjects.tolist())
    index = WindowIndex(
        files=index.files,
        file_idx=index.file_idx,
        rows=index.rows,
        subjects=index.subjects,
        targets=index.targets,
        releases=index.releases,
        dropped_subjects=tuple(sorted(all_subjects - kept_subjects)),
    )
    if len(index) == 0:
        raise DataError(
            f"no window with a target in {[str(p) for p in paths]} "
            f"({index.n_dropped} windows had a missing target); check --target"
        )
    return index


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
        chunk (:func:`pipelines.hdf5_chunks.decode_chunk`: ISA-L inflate, and only the cropped
        samples unshuffled), about 3x faster than h5py's filter pipeline plus its selection machinery;
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

    def __getitems__(self, keys: Sequence) -> WindowBatch:
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
        batch = WindowBatch(self._sample(p, arr[b]) for b, p in enumerate(positions))
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
    "DEFAULT_TARGETS",
    "EpochSampler",
    "FileInfo",
    "WindowDataset",
    "WindowIndex",
    "build_index",
    "compute_channel_stats",
    "read_file_info",
    "worker_init_fn",
]
