"""Raw-chunk decoding (pipelines.hdf5_chunks) against h5py: every storage reads the same values.

Each storage variant is read by ``H5Windows.iter_chunks`` and compared with h5py's own read of
the dataset and with the array that was written; the test also pins which path read it (decoded
here, or through h5py), so a variant silently moving between paths is noticed.
"""

from __future__ import annotations

import logging
import zlib

import h5py
import numpy as np
import pytest

from pipelines import hdf5_chunks
from pipelines.errors import InputDataError
from pipelines.hdf5_chunks import (
    ChunkDecodeError,
    decode_chunk,
    direct_chunk_plan,
    read_chunk_part,
    unshuffle_into,
)
from pipelines.hdf5_io import open_windows

N_WIN, N_CH, N_T = 6, 4, 30


def _values(dtype=np.float32, shape=(N_WIN, N_CH, N_T)) -> np.ndarray:
    return np.random.default_rng(7).standard_normal(shape).astype(dtype)


def _add_subjects(f: h5py.File, n: int) -> None:
    f.create_dataset("subjects", data=np.array([b"NDARAA000001"] * n))


def _read_all(path, chunk: int = 4) -> tuple[np.ndarray, bool]:
    """(every window read by iter_chunks, whether the direct path was used).

    The same reader with ``direct=False`` (h5py only) must read the same values.
    """
    with open_windows(path, sfreq=100.0) as w:
        blocks = np.concatenate([b for _, b in w.iter_chunks(chunk, workers=2)])
        via_h5py = np.concatenate([b for _, b in w.iter_chunks(chunk, direct=False)])
        np.testing.assert_array_equal(blocks, via_h5py)
        return blocks, w.direct_plan is not None


def _h5py_read(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["data"][()]


def _shuffle(values: np.ndarray) -> bytes:
    """HDF5's shuffle filter: byte k of every value, then byte k + 1, ..."""
    size = values.dtype.itemsize
    return np.frombuffer(values.tobytes(), np.uint8).reshape(-1, size).T.tobytes()


# --- storage variants --------------------------------------------------------------------------
def _write_variant(path, variant: str) -> np.ndarray:
    """Write the windows of ``variant``; return what h5py must read back."""
    data = _values(np.float64 if variant == "float64" else np.float32)
    chunks = (1, N_CH, N_T)
    kw = {
        "fletcher32": {"compression": "gzip", "shuffle": True, "fletcher32": True},
        "lzf": {"compression": "lzf", "shuffle": True},
        "big-endian": {"compression": "gzip", "shuffle": True, "dtype": ">f4"},
        "float64": {"compression": "gzip", "shuffle": True},
        "gzip-no-shuffle": {"compression": "gzip", "shuffle": False},
        "unwritten": {"compression": "gzip", "shuffle": True, "fillvalue": 7.5},
    }[variant]
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "data", shape=data.shape, chunks=chunks, **{"dtype": data.dtype, **kw}
        )
        if variant == "unwritten":  # windows 2 and 5 never written: their chunks do not exist
            for i in (0, 1, 3, 4):
                ds[i] = data[i]
            data[[2, 5]] = 7.5
        else:
            ds[...] = data
        _add_subjects(f, N_WIN)
    return data


@pytest.mark.parametrize(
    ("variant", "direct"),
    [
        ("fletcher32", False),
        ("lzf", False),
        ("big-endian", False),
        ("unwritten", False),
        ("float64", True),
        ("gzip-no-shuffle", True),
    ],
)
def test_storage_variants_read_like_h5py(tmp_path, variant, direct):
    path = tmp_path / f"{variant}.h5"
    expected = _write_variant(path, variant)
    got, used_direct = _read_all(path)
    assert used_direct is direct
    np.testing.assert_array_equal(got, _h5py_read(path))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype.isnative


@pytest.mark.parametrize("shuffle", [True, False])
def test_chunks_whose_filter_mask_skips_a_filter(tmp_path, shuffle):
    """Chunks written raw with ``write_direct_chunk(filter_mask=...)``: a set bit i means filter
    i of the pipeline was not applied to that chunk (and must not be undone on read)."""
    data = _values(shape=(8, N_CH, N_T))
    masks = [0b00, 0b01, 0b10, 0b11] if shuffle else [0b0, 0b1, 0b0, 0b1]
    path = tmp_path / "masked.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "data", data.shape, "f4", chunks=(2, N_CH, N_T), compression="gzip", shuffle=shuffle
        )
        for k, mask in enumerate(masks):
            values = data[2 * k : 2 * k + 2]
            shuffle_bit, deflate_bit = (0b01, 0b10) if shuffle else (0, 0b01)
            raw = values.tobytes() if (mask & shuffle_bit or not shuffle) else _shuffle(values)
            raw = raw if mask & deflate_bit else zlib.compress(raw, 4)
            ds.id.write_direct_chunk((2 * k, 0, 0), raw, filter_mask=mask)
        _add_subjects(f, 8)
    with h5py.File(path, "r") as f:
        assert [f["data"].id.get_chunk_info(i).filter_mask for i in range(4)] == masks
    for chunk in (1, 2, 3, 8):
        got, used_direct = _read_all(path, chunk=chunk)
        assert used_direct
        np.testing.assert_array_equal(got, _h5py_read(path))
        np.testing.assert_array_equal(got, data)


def test_a_chunk_that_fails_to_decode_is_reread_through_h5py(tmp_path, monkeypatch, caplog):
    path = tmp_path / "x.h5"
    data = _write_variant(path, "float64")
    with h5py.File(path, "r") as f:
        _, bad_raw = f["data"].id.read_direct_chunk((3, 0, 0))
    real = hdf5_chunks.decode_chunk
    failed = []

    def failing_on_chunk_3(raw, *args, **kwargs):
        if raw == bad_raw:
            failed.append(True)
            raise ChunkDecodeError("injected failure")
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(hdf5_chunks, "decode_chunk", failing_on_chunk_3)
    with caplog.at_level(logging.WARNING, logger="pipelines.hdf5_chunks"):
        got, used_direct = _read_all(path, chunk=1)
    assert used_direct and failed == [True]
    np.testing.assert_array_equal(got, data)
    assert "chunk at window 3: direct decoding failed (injected failure); h5py read it" in (
        caplog.text
    )


def test_read_chunk_part_reports_which_path_read_it(tmp_path):
    path = tmp_path / "x.h5"
    data = _write_variant(path, "float64")
    with h5py.File(path, "r") as f:
        ds = f["data"]
        plan = direct_chunk_plan(ds)
        out = np.empty((1, N_CH, N_T))
        assert read_chunk_part(ds, plan, 4, slice(0, 1), out) is True
        np.testing.assert_array_equal(out, data[4:5])
        wrong = type(plan)(per=2, shuffled=plan.shuffled, dtype=plan.dtype)  # a bad plan
        assert read_chunk_part(ds, wrong, 4, slice(0, 1), out) is False  # h5py read it
        np.testing.assert_array_equal(out, data[4:5])


def test_corrupt_chunk_is_reported_only_when_h5py_fails_too(tmp_path):
    path = tmp_path / "corrupt.h5"
    _write_variant(path, "float64")
    with h5py.File(path, "r") as f:
        offset = f["data"].id.get_chunk_info(3).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    with pytest.raises(InputDataError) as err:
        _read_all(path)
    msg = str(err.value)
    assert "corrupt.h5: dataset 'data': chunk at window 3 does not inflate" in msg
    assert "h5py cannot read it either" in msg and "re-copy or re-export" in msg


# --- the decoding primitives ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32, np.float64])
def test_unshuffle_into_inverts_the_byte_planes(dtype):
    rng = np.random.default_rng(0)
    values = (
        rng.standard_normal((3, 5, 7)).astype(dtype)
        if dtype != np.uint8
        else rng.integers(0, 255, (3, 5, 7)).astype(np.uint8)
    )
    size = values.dtype.itemsize
    planes = np.frombuffer(_shuffle(values), np.uint8).reshape(size, 3, 5, 7)
    out = np.empty_like(values)
    np.testing.assert_array_equal(unshuffle_into(planes, out), values)
    crop = np.empty((5, 3), dtype)  # a strided part of the planes decodes only that part
    np.testing.assert_array_equal(unshuffle_into(planes[:, 1, :, 2:5], crop), values[1, :, 2:5])


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_chunk_selection_equals_h5py(tmp_path, shuffle, dtype):
    data = _values(dtype, (5, 4, 30))
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(2, 4, 30), compression="gzip", shuffle=shuffle)
        _add_subjects(f, 5)
    with h5py.File(path, "r") as f:
        ds = f["data"]
        plan = direct_chunk_plan(ds)
        assert (plan.per, plan.shuffled, plan.dtype) == (2, shuffle, np.dtype(dtype))
        mask, raw = ds.id.read_direct_chunk((2, 0, 0))
        out = np.empty((4, 10), np.float32)  # a cast to float32, as the training loader reads
        decode_chunk(
            raw, mask, shuffle, plan.dtype, (2, 4, 30), out, select=(1, slice(None), slice(5, 15))
        )
        np.testing.assert_array_equal(out, data[3, :, 5:15].astype(np.float32))
    got, used_direct = _read_all(path, chunk=3)
    assert used_direct
    np.testing.assert_array_equal(got, data)


def test_decode_chunk_errors_say_what_was_found():
    out = np.empty((2, 3), np.float32)
    with pytest.raises(ChunkDecodeError, match="does not inflate"):
        decode_chunk(b"not zlib", 0, True, np.dtype("f4"), (2, 3), out)
    short = zlib.compress(np.zeros(5, np.float32).tobytes())
    with pytest.raises(ChunkDecodeError, match="holds 5 values, expected 6"):
        decode_chunk(short, 0, True, np.dtype("f4"), (2, 3), out)


def test_direct_plan_refuses_chunks_that_split_windows(tmp_path):
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "data", data=np.zeros((4, 6, 10), np.float32), chunks=(1, 3, 10), compression="gzip"
        )
    with h5py.File(path, "r") as f:
        assert direct_chunk_plan(f["data"]) is None
