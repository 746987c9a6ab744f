"""Open and validate EEG2025-style HDF5 window files, and read them in chunks of windows.

Two layouts are detected (DESIGN.md); any other can be described with :class:`H5Layout`:

* Challenge 2: ``data`` (N, C, T) + ``subjects`` (N,) + ``targets`` (externalizing) + optional
  ``p_factors``; root attrs ``sfreq``, ``n_windows``, ``n_channels``, ``n_times``, ``release``.
* Challenge 1: ``eeg`` (N, C, T) + ``subject_ids`` (N,) + ``labels`` (response time, s); root attrs
  ``sfreq``, ``n_windows``, ``n_channels``, ``n_timepoints``, ``release``.

Everything is validated when the file is opened, before any computation: a readable HDF5 file,
the datasets present, rank 3, channel/sample/window counts consistent with the attributes,
``sfreq`` present (or given), per-window arrays of length N, channel names of length C, a known
unit. Every problem raises :class:`~pipelines.errors.InputDataError` naming the file, the dataset
and a fix.

Reading (:meth:`H5Windows.iter_chunks`) never loads the whole file. For the common case (chunks
of whole windows compressed with gzip, optionally with the shuffle filter) the raw chunks are
read with ``read_direct_chunk`` and inflated in a thread pool (with ISA-L's ``isal_zlib`` when the
optional ``isal`` package is installed, else ``zlib``): inflating releases the GIL while
h5py serialises every HDF5 call behind one lock, so this is how decompression runs on several
cores and overlaps the band-power computation. Other layouts fall back to plain h5py slicing
(still prefetched in a background thread).
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

try:  # ISA-L's inflate is about 1.5-3x faster than zlib's and also releases the GIL
    from isal import isal_zlib as _inflate_lib
except ImportError:  # optional dependency: plain zlib gives the same bytes
    import zlib as _inflate_lib

from pipelines.bandpower import unit_scale_to_uv
from pipelines.errors import InputDataError
from services.ids import normalize_subject_id

H5Z_FILTER_DEFLATE = 1
H5Z_FILTER_SHUFFLE = 2
#: Names of the reference channel (flat in HBN recordings); E129 is an alias of Cz.
REFERENCE_CHANNELS = frozenset({"Cz", "E129"})
DEFAULT_CHUNK_WINDOWS = 256


@dataclass(frozen=True)
class H5Layout:
    """Dataset names of one HDF5 layout.

    Parameters
    ----------
    name : str
        Layout name, e.g. ``"challenge2"``.
    challenge : int
        Which challenge's feature views the file feeds (1 or 2).
    data : str
        Windows dataset, shape (n_windows, n_channels, n_times).
    subjects : str
        Per-window subject ids (bytes or str, with or without ``sub-``).
    labels : mapping of label name -> dataset
        Per-window labels; a missing optional one is skipped (see ``required_labels``).
    n_times_attr : str
        Root attribute that states n_times (checked when present).
    required_labels : tuple of str
        Label names that must be present.
    """

    name: str
    challenge: int
    data: str
    subjects: str
    labels: Mapping[str, str] = field(default_factory=dict)
    n_times_attr: str = "n_times"
    required_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.challenge not in (1, 2):
            raise ValueError(
                f"layout {self.name!r}: challenge must be 1 or 2, got {self.challenge}"
            )


CHALLENGE2_LAYOUT = H5Layout(
    name="challenge2",
    challenge=2,
    data="data",
    subjects="subjects",
    labels={"externalizing": "targets", "p_factor": "p_factors"},
    n_times_attr="n_times",
    required_labels=(),
)
CHALLENGE1_LAYOUT = H5Layout(
    name="challenge1",
    challenge=1,
    data="eeg",
    subjects="subject_ids",
    labels={"response_time": "labels"},
    n_times_attr="n_timepoints",
    required_labels=(),
)
KNOWN_LAYOUTS = {"challenge2": CHALLENGE2_LAYOUT, "challenge1": CHALLENGE1_LAYOUT}


def layout_from_mapping(mapping: Mapping[str, str], base: H5Layout | None = None) -> H5Layout:
    """A layout from ``{"data": ..., "subjects": ..., "challenge": "1", "label:<name>": ...}``.

    Keys not given come from ``base`` (default: the Challenge 2 layout).
    """
    base = base or CHALLENGE2_LAYOUT
    known = {"data", "subjects", "challenge", "name"}
    labels = dict(base.labels)
    for key, value in mapping.items():
        if key.startswith("label:"):
            labels[key[len("label:") :]] = value
        elif key not in known:
            raise ValueError(
                f"unknown dataset mapping key {key!r}; expected data, subjects, challenge, name "
                "or label:<name> (e.g. label:response_time=labels)"
            )
    try:
        challenge = int(mapping.get("challenge", base.challenge))
    except ValueError as exc:
        raise ValueError(f"challenge must be 1 or 2, got {mapping.get('challenge')!r}") from exc
    return H5Layout(
        name=mapping.get("name", f"custom_challenge{challenge}"),
        challenge=challenge,
        data=mapping.get("data", base.data),
        subjects=mapping.get("subjects", base.subjects),
        labels=labels,
        n_times_attr=base.n_times_attr,
    )


def default_channel_names(n_channels: int) -> list[str]:
    """E1..E128 + Cz for 129 channels (HBN EGI montage), else ch0..ch{n-1}."""
    if n_channels == 129:
        return [f"E{i}" for i in range(1, 129)] + ["Cz"]
    return [f"ch{i}" for i in range(n_channels)]


def _text(value) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


class ChunkDecodeError(ValueError):
    """A raw chunk does not inflate, or holds the wrong number of values (message: what)."""


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

    Requires chunks of whole windows, little-endian floats, filters deflate or shuffle +
    deflate, and every chunk written (unwritten chunks hold fill values h5py would supply).
    """
    if ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    if (
        ds.dtype.byteorder not in ("=", "<", "|")
        or ds.dtype.kind != "f"
        or sys.byteorder != "little"
    ):
        return None
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters not in ([H5Z_FILTER_DEFLATE], [H5Z_FILTER_SHUFFLE, H5Z_FILTER_DEFLATE]):
        return None
    per = int(ds.chunks[0])
    try:
        n_stored = ds.id.get_num_chunks()
    except (AttributeError, RuntimeError, OSError):
        return None
    if n_stored != math.ceil(int(ds.shape[0]) / per):
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
        Its filter mask (bit i set = filter i of the pipeline was skipped).
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

    Raises
    ------
    ChunkDecodeError
        The chunk does not inflate, or holds the wrong number of values.
    """
    deflate_bit = 0b10 if shuffled else 0b01
    try:
        buf = raw if mask & deflate_bit else _inflate_lib.decompress(raw)
    except (_inflate_lib.error, ValueError) as exc:
        raise ChunkDecodeError("does not inflate") from exc
    n_items = int(np.prod(chunk_shape))
    if len(buf) != n_items * dtype.itemsize:
        raise ChunkDecodeError(
            f"holds {len(buf) // max(dtype.itemsize, 1)} values, expected {n_items}"
        )
    if shuffled and not (mask & 0b01):
        planes = np.frombuffer(buf, np.uint8).reshape(dtype.itemsize, *chunk_shape)
        sel = select if isinstance(select, tuple) else (select,)
        part = planes[(slice(None), *sel)]
        if out.dtype == dtype:
            unshuffle_into(part, out)
        else:
            np.copyto(
                out, unshuffle_into(part, np.empty(part.shape[1:], dtype)), casting="same_kind"
            )
    else:
        np.copyto(out, np.frombuffer(buf, dtype).reshape(chunk_shape)[select], casting="same_kind")
    return out


@dataclass
class H5Windows:
    """An open, validated window file. Use :func:`open_windows` (a context manager via ``with``).

    Attributes are plain values read at open time; the windows are read by :meth:`iter_chunks`.
    """

    path: Path
    layout: H5Layout
    n_windows: int
    n_channels: int
    n_times: int
    sfreq: float
    channel_names: list[str]
    to_uv: float
    release: str
    subject_ids: list[str]  # per window, normalised
    labels: dict[str, np.ndarray]  # per window, float64
    _file: h5py.File = field(repr=False)

    @property
    def reference_mask(self) -> np.ndarray:
        """True for reference channels (excluded from the window quality verdict)."""
        return np.array([c in REFERENCE_CHANNELS for c in self.channel_names], bool)

    @property
    def dataset(self) -> h5py.Dataset:
        return self._file[self.layout.data]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5Windows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException | None = None) -> InputDataError:
        detail = f": {exc}" if exc is not None else ""
        return InputDataError(
            f"{self.path}: dataset {self.layout.data!r}: {what}{detail}. The file is truncated or "
            "corrupt; re-copy or re-export it, then rerun (nothing was written for this file)."
        )

    def _direct_plan(self) -> tuple[int, bool] | None:
        """(windows per chunk, shuffled) when raw chunks can be inflated here, else None."""
        plan = direct_chunk_plan(self.dataset)
        return None if plan is None else (plan.per, plan.shuffled)

    def _read_direct(self, start: int, stop: int, per: int, shuffled: bool) -> np.ndarray:
        ds = self.dataset
        dtype = ds.dtype
        shape_tail = ds.shape[1:]
        out = np.empty((stop - start, *shape_tail), dtype=dtype)
        first = (start // per) * per
        for c0 in range(first, stop, per):
            try:
                mask, raw = ds.id.read_direct_chunk((c0, *([0] * len(shape_tail))))
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise self._error(f"cannot read the chunk at window {c0}", exc) from exc
            lo, hi = max(c0, start), min(c0 + per, stop)
            try:
                decode_chunk(
                    raw,
                    mask,
                    shuffled,
                    dtype,
                    (per, *shape_tail),
                    out[lo - start : hi - start],
                    select=slice(lo - c0, hi - c0),
                )
            except ChunkDecodeError as exc:
                raise self._error(f"chunk at window {c0} {exc}", exc.__cause__) from exc
        return out

    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        try:
            return self.dataset[start:stop]
        except (OSError, RuntimeError, ValueError) as exc:
            raise self._error(f"cannot read windows {start}:{stop}", exc) from exc

    def iter_chunks(
        self,
        chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
        *,
        workers: int = 2,
        prefetch: int = 3,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, windows[start:start + chunk_windows])`` in order, as float arrays.

        Parameters
        ----------
        chunk_windows : int
            Windows per yielded block (memory: chunk_windows * C * T * 4 bytes).
        workers : int
            Threads that read and inflate blocks ahead of the consumer.
        prefetch : int
            Blocks in flight ahead of the consumer.
        """
        if chunk_windows < 1:
            raise ValueError(f"chunk_windows must be >= 1, got {chunk_windows}")
        plan = self._direct_plan()
        if plan is not None:
            per, shuffled = plan
            step = max(per, (chunk_windows // per) * per)

            def read(a: int, b: int) -> np.ndarray:
                return self._read_direct(a, b, per, shuffled)

        else:
            step = chunk_windows
            read = self._read_slice
            workers = 1  # h5py serialises reads; one thread still overlaps I/O with compute
        starts = list(range(0, self.n_windows, step))
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="h5read") as pool:
            pending: deque[tuple[int, Future]] = deque()
            it = iter(starts)
            try:
                for s in it:
                    pending.append((s, pool.submit(read, s, min(s + step, self.n_windows))))
                    if len(pending) >= max(prefetch, 1):
                        break
                while pending:
                    s, fut = pending.popleft()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.append(
                            (nxt, pool.submit(read, nxt, min(nxt + step, self.n_windows)))
                        )
                    yield s, fut.result()
            finally:
                for _, fut in pending:
                    fut.cancel()


def _dataset(f: h5py.File, path: Path, name: str, what: str, fix: str) -> h5py.Dataset:
    if name not in f:
        raise InputDataError(
            f"{path}: missing dataset {name!r} ({what}); found {sorted(f.keys())}. {fix}"
        )
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise InputDataError(f"{path}: {name!r} is a group, expected a dataset ({what}). {fix}")
    return obj


def detect_layout(f: h5py.File, path: Path) -> H5Layout:
    """The known layout whose windows dataset is present (``data`` or ``eeg``)."""
    found = [lay for lay in KNOWN_LAYOUTS.values() if lay.data in f]
    if len(found) == 1:
        return found[0]
    keys = sorted(f.keys())
    if not found:
        raise InputDataError(
            f"{path}: no windows dataset: expected 'data' (Challenge 2 layout) or 'eeg' "
            f"(Challenge 1 layout), found {keys}. Fix: pass an explicit mapping, e.g. "
            "--map data=<dataset> --map subjects=<dataset> --map challenge=2"
        )
    raise InputDataError(
        f"{path}: both 'data' and 'eeg' datasets are present ({keys}); the layout is ambiguous. "
        "Fix: choose one with --layout challenge1|challenge2"
    )


def open_windows(
    path: str | Path,
    *,
    layout: H5Layout | None = None,
    sfreq: float | None = None,
    channel_names: Sequence[str] | None = None,
) -> H5Windows:
    """Open ``path`` and validate it completely (see the module docstring).

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

    Raises
    ------
    InputDataError
        Naming the file, the dataset and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file; check the --input path")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputDataError(
            f"{path}: not a readable HDF5 file (truncated, corrupt or another format): {exc}. "
            "Fix: re-copy or re-export the file"
        ) from exc
    try:
        return _validate(f, path, layout, sfreq, channel_names)
    except BaseException:
        f.close()
        raise


def _validate(
    f: h5py.File,
    path: Path,
    layout: H5Layout | None,
    sfreq: float | None,
    channel_names: Sequence[str] | None,
) -> H5Windows:
    lay = layout or detect_layout(f, path)
    fix = "Fix: pass an explicit mapping of dataset names (--map data=... --map subjects=...)"
    try:
        ds = _dataset(f, path, lay.data, "EEG windows, (n_windows, n_channels, n_times)", fix)
        if ds.ndim != 3:
            raise InputDataError(
                f"{path}: dataset {lay.data!r} has rank {ds.ndim} (shape {ds.shape}), expected rank 3 "
                "(n_windows, n_channels, n_times). Fix: reshape the windows before writing the file"
            )
        if ds.dtype.kind != "f":
            raise InputDataError(
                f"{path}: dataset {lay.data!r} has dtype {ds.dtype}, expected float32/float64 samples"
            )
        n, n_ch, n_t = (int(v) for v in ds.shape)
        if n == 0 or n_ch == 0 or n_t == 0:
            raise InputDataError(f"{path}: dataset {lay.data!r} is empty (shape {ds.shape})")
        attrs = f.attrs
        for attr, actual in (("n_windows", n), ("n_channels", n_ch), (lay.n_times_attr, n_t)):
            if attr in attrs and int(np.asarray(attrs[attr]).item()) != actual:
                raise InputDataError(
                    f"{path}: attribute {attr}={int(np.asarray(attrs[attr]).item())} disagrees with "
                    f"dataset {lay.data!r} shape {ds.shape} ({attr} should be {actual}). The file "
                    "is inconsistent (truncated write?); re-export it"
                )
        file_sfreq = float(np.asarray(attrs["sfreq"]).item()) if "sfreq" in attrs else None
        if file_sfreq is None and sfreq is None:
            raise InputDataError(
                f"{path}: no 'sfreq' root attribute and no sampling rate given. Fix: pass --sfreq HZ"
            )
        if file_sfreq is not None and sfreq is not None and not math.isclose(file_sfreq, sfreq):
            raise InputDataError(
                f"{path}: attribute sfreq={file_sfreq} Hz disagrees with the given {sfreq} Hz; "
                "drop --sfreq or fix the file"
            )
        rate = float(file_sfreq if file_sfreq is not None else sfreq)  # type: ignore[arg-type]
        if not (math.isfinite(rate) and rate > 0):
            raise InputDataError(f"{path}: sfreq={rate} is not a positive number of Hz")

        sub_ds = _dataset(f, path, lay.subjects, "per-window subject ids", fix)
        if sub_ds.shape != (n,):
            raise InputDataError(
                f"{path}: dataset {lay.subjects!r} has shape {sub_ds.shape}, expected ({n},): one "
                f"subject id per window of {lay.data!r}. Fix: re-export with matching lengths"
            )
        try:
            texts = [_text(v) for v in sub_ds[()]]
        except (OSError, TypeError) as exc:
            raise InputDataError(f"{path}: dataset {lay.subjects!r} is unreadable: {exc}") from exc
        ids = []
        for i, text in enumerate(texts):
            try:
                ids.append(normalize_subject_id(text))
            except ValueError as exc:  # services.ids.SubjectIdError: names the id and the fix
                raise InputDataError(
                    f"{path}: {exc} (dataset {lay.subjects!r}, window {i})"
                ) from exc

        labels: dict[str, np.ndarray] = {}
        for label, name in lay.labels.items():
            if name not in f:
                if label in lay.required_labels:
                    _dataset(f, path, name, f"per-window label {label}", fix)
                continue
            lds = _dataset(f, path, name, f"per-window label {label}", fix)
            if lds.shape != (n,):
                raise InputDataError(
                    f"{path}: dataset {name!r} ({label}) has shape {lds.shape}, expected ({n},): "
                    f"one value per window of {lay.data!r}. Fix: re-export with matching lengths"
                )
            try:
                labels[label] = np.asarray(lds[()], dtype=np.float64)
            except (OSError, ValueError, TypeError) as exc:
                raise InputDataError(
                    f"{path}: dataset {name!r} ({label}) is unreadable: {exc}"
                ) from exc

        names = _channel_names(f, path, n_ch, channel_names)
        unit = _text(attrs["units"]) if "units" in attrs else None
        try:
            to_uv = unit_scale_to_uv(unit)
        except ValueError as exc:
            raise InputDataError(f"{path}: attribute units={unit!r}: {exc}") from exc
        release = _text(attrs["release"]) if "release" in attrs else ""
    except InputDataError:
        raise
    except (OSError, RuntimeError, KeyError) as exc:
        raise InputDataError(
            f"{path}: reading the file's structure failed ({exc}); it is truncated or corrupt. "
            "Fix: re-copy or re-export the file"
        ) from exc
    return H5Windows(
        path=path,
        layout=lay,
        n_windows=n,
        n_channels=n_ch,
        n_times=n_t,
        sfreq=rate,
        channel_names=names,
        to_uv=to_uv,
        release=release,
        subject_ids=ids,
        labels=labels,
        _file=f,
    )


def _channel_names(f: h5py.File, path: Path, n_ch: int, given: Sequence[str] | None) -> list[str]:
    raw = None
    if "ch_names" in f:
        raw = f["ch_names"][()]
    elif "ch_names" in f.attrs:
        raw = f.attrs["ch_names"]
    if raw is not None:
        names = [_text(v) for v in np.atleast_1d(raw)]
        if len(names) != n_ch:
            raise InputDataError(
                f"{path}: 'ch_names' lists {len(names)} channels, the windows have {n_ch}. "
                "Fix: re-export the file with one name per channel"
            )
    elif given is not None:
        names = list(given)
        if len(names) != n_ch:
            raise InputDataError(
                f"{path}: {len(names)} channel names given, the windows have {n_ch} channels"
            )
    else:
        names = default_channel_names(n_ch)
    if len(set(names)) != len(names):
        raise InputDataError(f"{path}: channel names are not unique: {names}")
    return names


__all__ = [
    "CHALLENGE1_LAYOUT",
    "ChunkDecodeError",
    "DirectChunkPlan",
    "CHALLENGE2_LAYOUT",
    "KNOWN_LAYOUTS",
    "REFERENCE_CHANNELS",
    "H5Layout",
    "H5Windows",
    "decode_chunk",
    "default_channel_names",
    "direct_chunk_plan",
    "detect_layout",
    "layout_from_mapping",
    "open_windows",
    "unshuffle_into",
]
