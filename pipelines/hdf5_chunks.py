"""Direct decoding of raw HDF5 chunks: gzip (deflate) with or without the shuffle filter.

Why by hand: h5py runs every HDF5 call, filters included, behind one global lock, so a file read
through h5py inflates on one core. Reading the raw chunk (``read_direct_chunk``, a short call)
and inflating it outside HDF5 lets a thread pool inflate on every core (ISA-L's ``isal_zlib``
releases the GIL) while the band-power kernel runs; it also lets the training loader unshuffle
only the samples of a crop. No library decodes HDF5's shuffle + deflate chunks outside libhdf5
(hdf5plugin and numcodecs plug into the same serialised pipeline, or want whole buffers).
``benchmarks/bench_features.py`` measures it against h5py on the same file in every run.

Only what is decoded here exactly as libhdf5 would is accepted (:func:`direct_chunk_plan`):
chunks of whole windows, little-endian floats on a little-endian machine, filters deflate or
shuffle + deflate, every chunk written. Anything else (fletcher32, lzf, big-endian, unwritten
chunks, ...) is read through h5py. A chunk that fails to decode here is re-read through h5py
(:func:`read_chunk_part`) before anyone calls the file corrupt.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass

import h5py
import numpy as np
from isal import isal_zlib

from pipelines.errors import PipelineError

log = logging.getLogger(__name__)

H5Z_FILTER_DEFLATE = 1
H5Z_FILTER_SHUFFLE = 2
#: Exceptions that h5py raises for an unreadable chunk or a broken chunk index.
H5_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError)


class ChunkDecodeError(PipelineError, ValueError):
    """A raw chunk cannot be decoded; the message says what was found (callers add the file)."""


@dataclass(frozen=True)
class DirectChunkPlan:
    """How raw chunks of a windows dataset are decoded without h5py's filter pipeline.

    Attributes
    ----------
    per : int
        Windows per chunk (each chunk holds whole windows: chunks[1:] == shape[1:]).
    shuffled : bool
        The shuffle filter runs before deflate.
    dtype : np.dtype
        Stored (little-endian float) dtype.
    """

    per: int
    shuffled: bool
    dtype: np.dtype


def direct_chunk_plan(ds: h5py.Dataset) -> DirectChunkPlan | None:
    """A :class:`DirectChunkPlan` when ``ds`` (N, ...) can be decoded here, else None.

    Requires chunks of whole windows, little-endian floats (on a little-endian machine), filters
    deflate or shuffle + deflate, and every chunk written (unwritten chunks hold fill values that
    h5py supplies).
    """
    if ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    little = ds.dtype.byteorder in ("=", "<", "|") and sys.byteorder == "little"
    if not little or ds.dtype.kind != "f":
        return None
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters not in ([H5Z_FILTER_DEFLATE], [H5Z_FILTER_SHUFFLE, H5Z_FILTER_DEFLATE]):
        return None
    per = int(ds.chunks[0])
    if ds.id.get_num_chunks() != math.ceil(int(ds.shape[0]) / per):
        return None
    return DirectChunkPlan(per, filters[0] == H5Z_FILTER_SHUFFLE, np.dtype(ds.dtype))


def unshuffle_into(planes: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Undo HDF5's shuffle filter: byte planes -> values, written into ``out``.

    Parameters
    ----------
    planes : ndarray, shape (itemsize, *shape), uint8
        Plane ``k`` holds byte ``k`` (little-endian) of every value; any strides (a crop of the
        planes decodes only the cropped values).
    out : ndarray, shape (*shape), dtype of that itemsize (1, 2, 4 or 8 bytes)
        Receives the values (any strides).

    Returns
    -------
    ndarray
        ``out``.

    Notes
    -----
    Hand-written because numpy's transposed byte copy (``planes.reshape(k, -1).T``) is about
    2-4x slower than assembling the values with shifts and ors on whole planes.
    """
    itemsize = planes.shape[0]
    if itemsize == 1:
        np.copyto(out.view(np.uint8), planes[0])
        return out
    as_uint = out.view(np.dtype(f"<u{itemsize}"))
    np.copyto(as_uint, planes[itemsize - 1])
    for k in range(itemsize - 2, -1, -1):
        np.left_shift(as_uint, 8, out=as_uint)
        np.bitwise_or(as_uint, planes[k], out=as_uint)
    return out


def decode_chunk(
    raw: bytes,
    mask: int,
    shuffled: bool,
    dtype: np.dtype,
    chunk_shape: tuple[int, ...],
    out: np.ndarray,
    *,
    select: tuple | slice = (),
) -> np.ndarray:
    """Inflate (and unshuffle) one raw chunk, writing ``chunk[select]`` into ``out``.

    Parameters
    ----------
    raw : bytes
        The chunk as ``read_direct_chunk`` returns it.
    mask : int
        Its filter mask (bit i set = filter i of the pipeline was skipped when it was written).
    shuffled : bool
        The pipeline is shuffle + deflate (else deflate only).
    dtype : np.dtype
        Stored dtype.
    chunk_shape : tuple of int
        Shape of a whole chunk.
    out : ndarray
        Destination of shape ``chunk[select].shape``; values are cast to its dtype.
    select : index
        Part of the chunk to decode (e.g. one window and a crop of its samples).

    Returns
    -------
    ndarray
        ``out``.

    Raises
    ------
    ChunkDecodeError
        The chunk does not inflate, or holds the wrong number of values.
    """
    shuffle_bit, deflate_bit = (0b01, 0b10) if shuffled else (0, 0b01)
    try:
        buf = raw if mask & deflate_bit else isal_zlib.decompress(raw)
    except (isal_zlib.error, ValueError) as exc:
        raise ChunkDecodeError("does not inflate") from exc
    n_items = math.prod(chunk_shape)
    if len(buf) != n_items * dtype.itemsize:
        raise ChunkDecodeError(
            f"holds {len(buf) // max(dtype.itemsize, 1)} values, expected {n_items}"
        )
    if shuffled and not (mask & shuffle_bit):
        planes = np.frombuffer(buf, np.uint8).reshape(dtype.itemsize, *chunk_shape)
        sel = select if isinstance(select, tuple) else (select,)
        part = planes[(slice(None), *sel)]
        if out.dtype == dtype:
            return unshuffle_into(part, out)
        values = unshuffle_into(part, np.empty(part.shape[1:], dtype))
    else:
        values = np.frombuffer(buf, dtype).reshape(chunk_shape)[select]
    np.copyto(out, values, casting="same_kind")
    return out


def read_chunk_part(
    ds: h5py.Dataset, plan: DirectChunkPlan, c0: int, select: slice, out: np.ndarray
) -> bool:
    """Windows ``c0 + select`` of ``ds`` (one chunk's worth at most) into ``out``.

    The chunk that starts at window ``c0`` is decoded here; when that fails, the same windows
    are re-read through h5py, and only when h5py fails too is the chunk reported unreadable.

    Parameters
    ----------
    ds : h5py.Dataset
        A dataset that ``plan`` was made for.
    plan : DirectChunkPlan
    c0 : int
        First window of the chunk (a multiple of ``plan.per``).
    select : slice
        Windows of the chunk, relative to ``c0``, with explicit start and stop.
    out : ndarray
        Destination, shape ``(stop - start, *ds.shape[1:])``.

    Returns
    -------
    bool
        True when decoded here, False when h5py had to read it (logged as a warning).

    Raises
    ------
    ChunkDecodeError
        Neither way reads the chunk (the message says what each found).
    """
    try:
        mask, raw = ds.id.read_direct_chunk((c0, *([0] * (ds.ndim - 1))))
        shape = (plan.per, *ds.shape[1:])
        decode_chunk(raw, mask, plan.shuffled, plan.dtype, shape, out, select=select)
        return True
    except (ChunkDecodeError, *H5_READ_ERRORS) as exc:
        direct_error = exc
    try:
        out[...] = ds[c0 + select.start : c0 + select.stop]
    except H5_READ_ERRORS as exc:
        raise ChunkDecodeError(
            f"{_describe(direct_error)}, and h5py cannot read it either ({exc})"
        ) from exc
    log.warning(
        "%s: dataset %r: chunk at window %d: direct decoding failed (%s); h5py read it",
        ds.file.filename,
        ds.name,
        c0,
        _describe(direct_error),
    )
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ChunkDecodeError):
        return str(exc)
    return f"cannot be read raw ({type(exc).__name__}: {exc})"


__all__ = [
    "ChunkDecodeError",
    "DirectChunkPlan",
    "decode_chunk",
    "direct_chunk_plan",
    "read_chunk_part",
    "unshuffle_into",
]
