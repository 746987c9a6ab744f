"""WindowLoader: workers return batches through a reused shared-memory slot pool.

Every test compares against ``num_workers=0`` (no pool) and keeps every batch it received until
the end, so a slot overwritten while the main process still used it would show up as a
difference; small pools (prefetch_factor 1 or 2) make each slot serve many batches.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from training.data import EpochSampler, WindowDataset, build_index, worker_init_fn
from training.features import BatchCollate, FeatureScaler, TableFeatureSource
from training.loader import SlotPool, WindowLoader


def _write(path, n=23):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((n, 129, 400)) * 20e-6).astype(np.float32)
    subjects = [f"NDARAA00000{i % 4}".encode() for i in range(n)]
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 129, 400), compression="gzip", shuffle=True)
        f.create_dataset("subjects", data=np.array(subjects))
        f.create_dataset("targets", data=rng.standard_normal(n).astype(np.float32))
        f.attrs.update(sfreq=100.0, release="R1")


class JitteryDataset(WindowDataset):
    """Workers take a random few ms per batch, so batches arrive out of order."""

    def __getitems__(self, keys):
        time.sleep(float(np.random.default_rng(keys[0][1]).integers(0, 6)) / 1000)
        return super().__getitems__(keys)


class CrashingDataset(WindowDataset):
    """A worker process dies (no exception, no cleanup) on the batch holding item 0."""

    def __getitems__(self, keys):
        if torch.utils.data.get_worker_info() is not None and any(k[0] == 0 for k in keys):
            os._exit(3)
        return super().__getitems__(keys)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader") / "w.h5"
    _write(path)
    return build_index([str(path)])


def _epochs(loader, epochs=(0, 1, 2), stop_after=None):
    """All batches of ``epochs`` (kept alive until the end); ``stop_after`` abandons epoch 0."""
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        for b, batch in enumerate(loader):
            out.append((epoch, batch))
            if stop_after is not None and epoch == epochs[0] and b + 1 == stop_after:
                break
    return out


def _assert_same(got, want, keys=("x", "y", "positions")):
    assert len(got) == len(want)
    for (e1, b1), (e2, b2) in zip(got, want, strict=True):
        assert e1 == e2 and b1["subjects"] == b2["subjects"]
        for k in keys:
            assert b1[k].dtype == b2[k].dtype
            assert torch.equal(b1[k], b2[k]), f"epoch {e1}: {k} differs"


def _loader(ds, workers, *, batch_size=3, persistent=True, prefetch=1, collate=None, **kw):
    return WindowLoader(
        ds,
        batch_size=batch_size,
        sampler=EpochSampler(len(ds), shuffle=True, seed=4),
        num_workers=workers,
        collate_fn=collate or BatchCollate(),
        worker_init_fn=worker_init_fn,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=prefetch if workers else None,
        **kw,
    )


@pytest.mark.parametrize("persistent", [True, False])
def test_slot_batches_equal_workers_0_across_epochs_and_a_short_last_batch(index, persistent):
    ds = JitteryDataset(index, crop_samples=200, random_crop=True)
    want = _epochs(_loader(ds, 0))
    loader = _loader(ds, 2, persistent=persistent)  # 3 slots for 8 batches per epoch
    got = _epochs(loader)
    assert [b["x"].shape[0] for e, b in got if e == 0] == [3] * 7 + [2]
    _assert_same(got, want)
    for _, b in got:  # copied out of the pool: private memory, one storage per batch
        assert not b["x"].is_shared()
        assert b["x"].untyped_storage().data_ptr() == b["positions"].untyped_storage().data_ptr()
    assert type(iter(_loader(ds, 0))).__name__ == "_SingleProcessDataLoaderIter"  # no pool


@pytest.mark.parametrize("persistent", [True, False])
def test_an_abandoned_epoch_leaves_no_stale_slot(index, persistent):
    ds = JitteryDataset(index, crop_samples=200, random_crop=True)
    want = _epochs(_loader(ds, 0), stop_after=2)
    got = _epochs(_loader(ds, 2, persistent=persistent, prefetch=2), stop_after=2)
    _assert_same(got, want)


def test_features_travel_in_the_slot_and_equal_workers_0(index):
    subjects = sorted(set(index.subjects.tolist()))
    matrix = np.arange(len(subjects) * 3, dtype=np.float32).reshape(-1, 3)
    matrix[1, 2] = np.nan
    source = TableFeatureSource("table", "svc", ["a", "b", "c"], subjects, matrix)
    collate = BatchCollate(source, FeatureScaler.fit(matrix))
    ds = WindowDataset(index, crop_samples=200)
    want = _epochs(_loader(ds, 0, collate=collate), epochs=(0,))
    got = _epochs(_loader(ds, 2, collate=collate, prefetch=2), epochs=(0,))
    _assert_same(got, want, keys=("x", "y", "positions", "features"))
    for _, b in got:
        assert not b["features"].is_shared() and b["lookup"]["worker"] in (0, 1)
        assert b["features"].untyped_storage().data_ptr() == b["x"].untyped_storage().data_ptr()


def test_batches_larger_than_a_slot_and_unordered_loaders_fall_back(index):
    ds = WindowDataset(index, crop_samples=200, random_crop=True)

    class Uneven(BatchSampler):  # says 3 but yields 3, then 9 (a slot fits 3 plus its tail)
        def __iter__(self):
            keys = list(self.sampler)
            yield from (keys[:3], keys[3:12], keys[12:])

    def read(workers, **kw):
        sampler = EpochSampler(len(ds), shuffle=True, seed=4)
        loader = WindowLoader(
            ds,
            batch_sampler=Uneven(sampler, 3, False),
            num_workers=workers,
            collate_fn=BatchCollate(),
            **kw,
        )
        return [(0, b) for b in loader]

    want = read(0)
    got = read(2, prefetch_factor=1)
    _assert_same(got, want)
    assert [b["x"].is_shared() for _, b in got] == [False, True, True]  # 9 and 11: own segments
    unordered = _loader(ds, 2, in_order=False, persistent=False)
    assert all(b["x"].is_shared() for b in unordered)  # no pool: torch's plain path


def test_a_crashed_worker_is_an_error_and_a_new_loader_works(index):
    ds = CrashingDataset(index, crop_samples=200)
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(_loader(ds, 2, persistent=False))
    ds_ok = WindowDataset(index, crop_samples=200)
    _assert_same(_epochs(_loader(ds_ok, 2), epochs=(1,)), _epochs(_loader(ds_ok, 0), epochs=(1,)))


def test_pool_pack_and_unpack_round_trip_and_copy():
    pool = SlotPool(3, 1000)
    assert pool.slot_bytes == 4096 and pool.slot_base(4) == pool.slot_base(1) == 4096
    base = pool.slot_base(5)
    x = torch.empty(0).set_(pool.storage, base // 4, (2, 3))
    x.copy_(torch.arange(6.0).reshape(2, 3))
    out = {"x": x, "t": x.T, "extra": [torch.tensor([7, 8], dtype=torch.int64)], "name": "s"}
    packed = pool.pack(out, base, 24)
    assert not any(
        isinstance(v, torch.Tensor) for v in (packed["x"], packed["t"], packed["extra"][0])
    )
    got = pool.unpack(packed)
    x.fill_(-1.0)  # the slot is reused: the unpacked batch must not change
    assert torch.equal(got["x"], torch.arange(6.0).reshape(2, 3)) and torch.equal(
        got["t"], got["x"].T
    )
    assert got["extra"][0].tolist() == [7, 8] and got["name"] == "s"
    with pytest.raises(RuntimeError, match="outside the batch's slot"):
        pool.pack({"x": x}, pool.slot_base(0), 24)
