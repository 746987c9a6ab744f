"""Open a window file (validated by :mod:`pipelines.hdf5_layout`) and read it in chunks of windows.

Reading (:meth:`H5Windows.iter_chunks`) never loads the whole file. When the windows dataset can
be decoded outside HDF5 (:func:`pipelines.hdf5_chunks.direct_chunk_plan`: chunks of whole windows
compressed with gzip, optionally with the shuffle filter) the raw chunks are read and inflated
in a thread pool, overlapping the band-power computation; a chunk that fails to decode is re-read
through h5py before the file is called corrupt. Every other storage (fletcher32, lzf,
big-endian, contiguous, unwritten chunks, chunks that split windows) is read through h5py
slicing, prefetched in one background thread (h5py serialises its calls).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from pipelines.errors import InputDataError
from pipelines.hdf5_chunks import (
    H5_READ_ERRORS,
    ChunkDecodeError,
    DirectChunkPlan,
    direct_chunk_plan,
    read_chunk_part,
)
from pipelines.hdf5_layout import H5Layout, WindowFileInfo, describe_window_file

DEFAULT_CHUNK_WINDOWS = 256


@dataclass
class H5Windows(WindowFileInfo):
    """An open, validated window file. Use :func:`open_windows` (a context manager via ``with``).

    Attributes are plain values read at open time (:class:`~pipelines.hdf5_layout.WindowFileInfo`);
    the windows are read by :meth:`iter_chunks`.
    """

    _file: h5py.File = field(repr=False, kw_only=True)

    @property
    def dataset(self) -> h5py.Dataset:
        return self._file[self.layout.data]

    @property
    def direct_plan(self) -> DirectChunkPlan | None:
        """How raw chunks are decoded here, or None when the windows are read through h5py."""
        return direct_chunk_plan(self.dataset)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5Windows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _error(self, what: str, exc: BaseException | None = None) -> InputDataError:
        detail = f": {exc}" if exc is not None else ""
        return InputDataError(
            f"{self.path}: dataset {self.layout.data!r}: {what}{detail}. The file is truncated or "
            "corrupt; re-copy or re-export it, then rerun (nothing was written for this file)."
        )

    def _read_direct(self, start: int, stop: int, plan: DirectChunkPlan) -> np.ndarray:
        ds = self.dataset
        out = np.empty((stop - start, *ds.shape[1:]), dtype=ds.dtype)
        for c0 in range((start // plan.per) * plan.per, stop, plan.per):
            lo, hi = max(c0, start), min(c0 + plan.per, stop)
            try:
                read_chunk_part(ds, plan, c0, slice(lo - c0, hi - c0), out[lo - start : hi - start])
            except ChunkDecodeError as exc:
                raise self._error(f"chunk at window {c0} {exc}") from exc
        return out

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        try:
            return self.dataset[start:stop]
        except H5_READ_ERRORS as exc:
            raise self._error(f"cannot read windows {start}:{stop}", exc) from exc

    def iter_chunks(
        self,
        chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
        *,
        workers: int = 2,
        prefetch: int = 3,
        direct: bool = True,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, windows[start:start + chunk_windows])`` in order, as float arrays.

        Parameters
        ----------
        chunk_windows : int
            Windows per yielded block (memory: chunk_windows * C * T * 4 bytes); with direct
            decoding, rounded down to whole HDF5 chunks (at least one).
        workers : int
            Threads that read and inflate blocks ahead of the consumer (one when reading through
            h5py, which serialises its calls; that thread still overlaps I/O with compute).
        prefetch : int
            Blocks in flight ahead of the consumer.
        direct : bool
            Decode raw chunks here when the storage allows it (:attr:`direct_plan`); False
            reads through h5py only (the baseline of ``benchmarks/bench_features.py``).

        Yields
        ------
        start : int
            First window of the block.
        windows : ndarray, shape (n, n_channels, n_times)
            The stored dtype.
        """
        if chunk_windows < 1:
            raise ValueError(f"chunk_windows must be >= 1, got {chunk_windows}")
        plan = self.direct_plan if direct else None
        if plan is None:
            step, read, workers = chunk_windows, self._read_slice, 1
        else:
            step = max(plan.per, (chunk_windows // plan.per) * plan.per)

            def read(a: int, b: int) -> np.ndarray:
                return self._read_direct(a, b, plan)

        ranges = [(s, min(s + step, self.n_windows)) for s in range(0, self.n_windows, step)]
        yield from _prefetched(read, ranges, workers=workers, prefetch=prefetch)


def _prefetched(
    read: Callable[[int, int], np.ndarray],
    ranges: Sequence[tuple[int, int]],
    *,
    workers: int,
    prefetch: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, read(start, stop))`` for each range, in order, with reads running ahead."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="h5read") as pool:
        pending: deque[tuple[int, Future]] = deque()
        todo = iter(ranges)
        try:
            for a, b in todo:
                pending.append((a, pool.submit(read, a, b)))
                if len(pending) >= max(prefetch, 1):
                    break
            while pending:
                a, fut = pending.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt[0], pool.submit(read, *nxt)))
                yield a, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def open_windows(
    path: str | Path,
    *,
    layout: H5Layout | None = None,
    sfreq: float | None = None,
    channel_names: Sequence[str] | None = None,
) -> H5Windows:
    """Open ``path`` and validate it completely (:func:`~pipelines.hdf5_layout.describe_window_file`).

    Parameters
    ----------
    path : path
        HDF5 file.
    layout : H5Layout, optional
        Dataset names; default: detected (Challenge 2 ``data`` or Challenge 1 ``eeg``).
    sfreq : float, optional
        Sampling rate in Hz when the file has no ``sfreq`` attribute (must agree when it has).
    channel_names : sequence of str, optional
        Channel names when the file has none (default E1..E128 + Cz for 129 channels).

    Returns
    -------
    H5Windows
        Open until closed (or the end of a ``with`` block).

    Raises
    ------
    InputDataError
        Naming the file, the dataset and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            f"{path}: no such file; check the path (a typo, or a glob that matched nothing)"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputDataError(
            f"{path}: not a readable HDF5 file (truncated, corrupt or another format): {exc}. "
            "Fix: re-copy or re-export the file"
        ) from exc
    try:
        info = describe_window_file(f, path, layout, sfreq, channel_names)
    except BaseException:
        f.close()
        raise
    return H5Windows(**{fl.name: getattr(info, fl.name) for fl in fields(info)}, _file=f)


__all__ = ["DEFAULT_CHUNK_WINDOWS", "H5Windows", "open_windows"]
