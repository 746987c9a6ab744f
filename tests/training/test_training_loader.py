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

from training.data import EpochSampler, WindowDataset, worker_init_fn
from training.features import BatchCollate, FeatureScaler, TableFeatureSource
from training.index import build_index
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
    assert loader.uses_slots and not _loader(ds, 0).uses_slots  # no pool without workers


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


def test_batches_larger_than_a_slot_and_loaders_without_slots_fall_back(index):
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
    plain = _loader(ds, 2, shared_slots=False, persistent=False)
    assert not plain.uses_slots
    assert all(b["x"].is_shared() for b in plain)  # no pool: torch's plain path


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


# --- the two behaviours of torch's DataLoader that the slot pool relies on ----------------------
class AheadRecorder(WindowDataset):
    """Records, per worker, how far ahead of the main loop a batch is when its worker starts it.

    ``returned[0]`` counts the batches the main loop has finished with (already copied out of
    their slots); a worker starting batch ``k`` records ``k - returned[0]``.
    """

    def __init__(self, index, returned, ahead, **kw):
        super().__init__(index, **kw)
        self.returned, self.ahead = returned, ahead

    def __getitems__(self, keys):
        worker = torch.utils.data.get_worker_info().id
        self.ahead[worker] = max(int(self.ahead[worker]), keys.ordinal - int(self.returned[0]))
        time.sleep(float(np.random.default_rng(keys[0][1]).integers(0, 4)) / 1000)
        return super().__getitems__(keys)


@pytest.mark.parametrize(("workers", "prefetch"), [(2, 1), (2, 2), (1, 4)])
def test_torch_keeps_at_most_prefetch_times_workers_batches_ahead(index, workers, prefetch):
    """A worker starts batch k only once batch k - P - 1 was returned (P = prefetch x workers).

    This is why P + 1 slots suffice: the slot of batch k is not written again before the main
    process has copied batch k out.
    """
    returned = torch.zeros(1, dtype=torch.int64).share_memory_()
    ahead = torch.full((workers,), -1, dtype=torch.int64).share_memory_()
    ds = AheadRecorder(index, returned, ahead, crop_samples=200)
    loader = _loader(ds, workers, batch_size=2, prefetch=prefetch)
    for epoch in (0, 1):
        returned[0] = 0
        loader.sampler.set_epoch(epoch)
        for _ in loader:
            time.sleep(0.05)  # a slow consumer: the workers run as far ahead as torch lets them
            returned[0] += 1
    depth = prefetch * workers
    assert int(ahead.max()) <= depth, f"a batch started {int(ahead.max())} ahead, > {depth}"
    assert int(ahead.max()) >= depth - 1  # the bound is reached: the recording works


class EpochTaggedSampler(EpochSampler):
    """Keys ``(i, epoch)``: each batch says which epoch it belongs to."""

    def __iter__(self):
        yield from ((i, self.epoch) for i in range(self.n))


class Timeline(WindowDataset):
    """Slow batches that record (epoch, start, end) per worker in shared memory."""

    def __init__(self, index, log, count, **kw):
        super().__init__(index, **kw)
        self.log, self.count = log, count

    def __getitems__(self, keys):
        start = time.monotonic()
        time.sleep(0.02)
        out = super().__getitems__(keys)
        worker = torch.utils.data.get_worker_info().id
        n = int(self.count[worker])
        self.log[worker, n] = torch.tensor([keys[0][1], start, time.monotonic()])
        self.count[worker] = n + 1
        return out


def test_torch_finishes_an_abandoned_epoch_before_persistent_workers_start_the_next(index):
    """With persistent workers, iter() for a new epoch waits until every worker finished the
    batches still in flight from the previous one (abandoned here after its first batch): so
    batch 0 of the new epoch never shares a slot with a batch still being written."""
    log = torch.zeros((2, 64, 3), dtype=torch.float64).share_memory_()
    count = torch.zeros(2, dtype=torch.int64).share_memory_()
    ds = Timeline(index, log, count, crop_samples=200)
    loader = WindowLoader(
        ds,
        batch_size=2,
        sampler=EpochTaggedSampler(len(ds), shuffle=False, seed=0),
        num_workers=2,
        collate_fn=BatchCollate(),
        persistent_workers=True,
        prefetch_factor=2,
    )
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        for _ in loader:
            if epoch == 0:
                break  # abandoned with up to 4 batches in flight
    rows = torch.cat([log[w, : int(count[w])] for w in range(2)])
    old, new = rows[rows[:, 0] == 0], rows[rows[:, 0] == 1]
    assert len(old) >= 2, "batches of the abandoned epoch were in flight"
    assert len(new) == len(loader)
    assert float(old[:, 2].max()) <= float(new[:, 1].min())
