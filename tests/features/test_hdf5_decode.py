"""Raw-chunk decoding of pipelines.hdf5_io: the shuffle filter undone by hand equals h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipelines.hdf5_io import decode_chunk, direct_chunk_plan, open_windows, unshuffle_into


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32, np.float64])
def test_unshuffle_into_inverts_the_byte_planes(dtype):
    rng = np.random.default_rng(0)
    values = (
        rng.standard_normal((3, 5, 7)).astype(dtype)
        if dtype != np.uint8
        else rng.integers(0, 255, (3, 5, 7)).astype(np.uint8)
    )
    size = values.dtype.itemsize
    planes = (
        np.frombuffer(values.tobytes(), np.uint8).reshape(-1, size).T.copy().reshape(size, 3, 5, 7)
    )
    out = np.empty_like(values)
    np.testing.assert_array_equal(unshuffle_into(planes, out), values)
    crop = np.empty((5, 3), dtype)  # a strided part of the planes decodes only that part
    np.testing.assert_array_equal(unshuffle_into(planes[:, 1, :, 2:5], crop), values[1, :, 2:5])


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_chunk_selection_equals_h5py(tmp_path, shuffle, dtype):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((5, 4, 30)).astype(dtype)
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(2, 4, 30), compression="gzip", shuffle=shuffle)
    with h5py.File(path, "r") as f:
        ds = f["data"]
        plan = direct_chunk_plan(ds)
        assert plan is not None and (plan.per, plan.shuffled, plan.dtype) == (
            2,
            shuffle,
            np.dtype(dtype),
        )
        mask, raw = ds.id.read_direct_chunk((2, 0, 0))
        out = np.empty((4, 10), np.float32)  # a cast to float32, as the training loader reads
        decode_chunk(
            raw, mask, shuffle, plan.dtype, (2, 4, 30), out, select=(1, slice(None), slice(5, 15))
        )
        np.testing.assert_array_equal(out, data[3, :, 5:15].astype(np.float32))
    with open_windows_like(path) as blocks:
        np.testing.assert_array_equal(blocks, data)


class open_windows_like:
    """iter_chunks over a bare file (sfreq given, subjects added) -> all windows."""

    def __init__(self, path):
        with h5py.File(path, "a") as f:
            f.create_dataset("subjects", data=np.array([b"NDARAA000001"] * f["data"].shape[0]))
        self.w = open_windows(path, sfreq=100.0)

    def __enter__(self):
        return np.concatenate([b for _, b in self.w.iter_chunks(3, workers=2)])

    def __exit__(self, *exc):
        self.w.close()


def test_direct_plan_refuses_chunks_that_split_windows(tmp_path):
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "data", data=np.zeros((4, 6, 10), np.float32), chunks=(1, 3, 10), compression="gzip"
        )
    with h5py.File(path, "r") as f:
        assert direct_chunk_plan(f["data"]) is None
