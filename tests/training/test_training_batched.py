"""Batched reads of WindowDataset (__getitems__) equal per-item reads, for every storage layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.data import EpochSampler, WindowDataset, compute_channel_stats, worker_init_fn
from training.features import BatchCollate
from training.index import build_index
from training.loader import StackedSamples


def _write(path, *, chunks, shuffle=True, compression="gzip", dtype=np.float32, n=10):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((n, 129, 400)) * 20e-6).astype(dtype)
    data[:, -1] = 0.0
    with h5py.File(path, "w") as f:
        kw = {"chunks": chunks, "compression": compression}
        if compression:
            kw["shuffle"] = shuffle
        f.create_dataset("data", data=data, **kw)
        f.create_dataset("subjects", data=np.array([b"NDARAA000001", b"NDARAA000002"] * (n // 2)))
        f.create_dataset("targets", data=rng.standard_normal(n).astype(np.float32))
        f.attrs.update(sfreq=100.0, release="R1")
    return data


LAYOUTS = {
    "gzip+shuffle, one window per chunk": {"chunks": (1, 129, 400)},
    "gzip, no shuffle": {"chunks": (1, 129, 400), "shuffle": False},
    "three windows per chunk": {"chunks": (3, 129, 400)},
    "float64": {"chunks": (1, 129, 400), "dtype": np.float64},
    "chunks split channels (h5py path)": {"chunks": (1, 64, 400)},
    "contiguous (h5py path)": {"chunks": None, "compression": None},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_batched_reads_equal_item_reads_and_h5py(tmp_path, layout):
    path = tmp_path / "w.h5"
    data = _write(path, **LAYOUTS[layout])
    index = build_index([str(path)])
    stats = compute_channel_stats(index, np.arange(len(index)))
    ds = WindowDataset(index, crop_samples=200, random_crop=True, stats=stats)
    keys = list(EpochSampler(len(ds), shuffle=True, seed=5))
    batch = ds.__getitems__(keys)
    assert isinstance(batch, StackedSamples) and batch.x.shape == (len(keys), 129, 200)
    for b, key in enumerate(keys):
        x, y, subject, position = ds[key]
        np.testing.assert_array_equal(batch.x[b].numpy(), x)
        assert batch[b][1:] == (y, subject, position)
        assert batch.y[b].item() == np.float32(y) and batch.positions[b].item() == position
    plain = WindowDataset(index)  # no crop, no normalisation: h5py's values in uV
    for p in range(len(index)):
        np.testing.assert_allclose(
            plain.read_window(p), data[p].astype(np.float32) * np.float32(1e6), rtol=1e-6
        )


def test_collate_of_stacked_samples_equals_collate_of_samples(tmp_path):
    path = tmp_path / "w.h5"
    _write(path, chunks=(1, 129, 400))
    ds = WindowDataset(build_index([str(path)]), crop_samples=200)
    keys = [3, 1, 4, 1, 5]
    fast = BatchCollate()(ds.__getitems__(keys))
    slow = BatchCollate()([ds[k] for k in keys])
    assert fast.keys() == slow.keys() and fast["subjects"] == slow["subjects"]
    for k in ("x", "y", "positions"):
        assert fast[k].dtype == slow[k].dtype
        torch.testing.assert_close(fast[k], slow[k], rtol=0, atol=0)


def test_workers_receive_whole_batches_in_one_segment(tmp_path):
    path = tmp_path / "w.h5"
    _write(path, chunks=(1, 129, 400), n=12)
    ds = WindowDataset(build_index([str(path)]), crop_samples=200, random_crop=True)
    sampler = EpochSampler(len(ds), shuffle=True, seed=1)
    seen = {}
    for workers in (0, 2):
        loader = DataLoader(
            ds,
            batch_size=5,
            sampler=sampler,
            num_workers=workers,
            collate_fn=BatchCollate(),
            worker_init_fn=worker_init_fn,
        )
        batches = list(loader)
        seen[workers] = [(b["x"].clone(), b["y"].clone(), b["positions"].clone()) for b in batches]
        if workers:
            for b in batches:
                assert b["x"].is_shared()
                assert b["x"].untyped_storage().data_ptr() == b["y"].untyped_storage().data_ptr()
    for (x0, y0, p0), (x2, y2, p2) in zip(seen[0], seen[2], strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2) and torch.equal(p0, p2)
