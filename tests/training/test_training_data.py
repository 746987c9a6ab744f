"""The HDF5 window dataset, loaders with workers, splits and normalisation (small demo data)."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.data import EpochSampler, WindowDataset, compute_channel_stats, worker_init_fn
from training.errors import DataError
from training.features import BatchCollate
from training.index import build_index
from training.normalization import channel_stats
from training.splits import make_split, split_subjects


def _c2_files(demo) -> list[str]:
    return [str(p) for p in sorted(demo.challenge2.values())]


def _read_all(dataset, *, workers: int, epoch: int = 0, batch_size: int = 5):
    sampler = EpochSampler(len(dataset), shuffle=True, seed=3)
    sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=BatchCollate(),
        worker_init_fn=worker_init_fn,
    )
    xs, ys, subjects, positions = [], [], [], []
    for batch in loader:
        xs.append(batch["x"].numpy())
        ys.append(batch["y"].numpy())
        subjects += batch["subjects"]
        positions.append(batch["positions"].numpy())
    return np.concatenate(xs), np.concatenate(ys), subjects, np.concatenate(positions)


def test_index_drops_and_counts_windows_without_target(small_demo):
    index = build_index(_c2_files(small_demo))
    raw_n, raw_nan = 0, 0
    for path in _c2_files(small_demo):
        with h5py.File(path, "r") as f:
            targets = f["targets"][()]
            raw_n += targets.shape[0]
            raw_nan += int(np.isnan(targets).sum())
    assert raw_nan > 0, "the demo data should contain subjects without scores"
    assert len(index) == raw_n - raw_nan
    assert index.n_dropped == raw_nan
    assert np.isfinite(index.targets).all()
    assert index.dropped_subjects and not set(index.dropped_subjects) & set(index.subjects)
    assert {f.release for f in index.files} == {"R1", "R2"}


def test_both_layouts_are_read_and_targets_chosen_by_label(small_demo):
    c1 = build_index([str(p) for p in small_demo.challenge1.values()])
    assert c1.files[0].layout == "challenge1" and c1.files[0].target_name == "response_time"
    with h5py.File(small_demo.challenge1["R1"], "r") as f:
        np.testing.assert_array_equal(c1.targets[: f["labels"].shape[0]], f["labels"][()])
    pf = build_index(_c2_files(small_demo), target="p_factor")
    with h5py.File(small_demo.challenge2["R1"], "r") as f:
        expected = f["p_factors"][()]
    np.testing.assert_array_equal(
        pf.targets[: np.isfinite(expected).sum()], expected[np.isfinite(expected)]
    )
    with pytest.raises(DataError, match="response_time"):
        build_index(_c2_files(small_demo), target="response_time")


def test_windows_are_microvolts_and_crops_are_centre_or_seeded(small_demo):
    index = build_index(_c2_files(small_demo))
    with h5py.File(index.files[0].path, "r") as f:
        raw = f["data"][int(index.rows[0])]
    full = WindowDataset(index)[0][0]
    np.testing.assert_allclose(full, raw * 1e6, rtol=1e-6)
    centre = WindowDataset(index, crop_samples=200)[0][0]
    np.testing.assert_allclose(centre, raw[:, 100:300] * 1e6, rtol=1e-6)
    rand = WindowDataset(index, crop_samples=200, random_crop=True)
    a, b = rand[(0, 11)][0], rand[(0, 11)][0]
    np.testing.assert_array_equal(a, b)  # same crop seed, same crop
    starts = set()
    for seed in range(20):
        crop = rand[(0, seed)][0]
        start = next(s for s in range(201) if np.allclose(crop, raw[:, s : s + 200] * 1e6))
        starts.add(start)
    assert len(starts) > 3


def test_dataset_pickles_without_handles_and_reopens_lazily(small_demo):
    index = build_index(_c2_files(small_demo))
    ds = WindowDataset(index, crop_samples=200)
    first = ds[0][0]
    assert ds._handles, "reading opens a handle in this process"
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {} and clone._pid is None
    np.testing.assert_array_equal(clone[0][0], first)
    ds.close()


@pytest.mark.parametrize("workers", [2])
def test_workers_return_exactly_the_windows_of_the_main_process(small_demo, workers):
    index = build_index(_c2_files(small_demo))
    ds = WindowDataset(index, crop_samples=200, random_crop=True)
    ds[0]  # a handle opened in the parent before the workers fork must not be reused by them
    x0, y0, s0, p0 = _read_all(ds, workers=0, epoch=1)
    xw, yw, sw, pw = _read_all(ds, workers=workers, epoch=1)
    assert sw == s0 and len(s0) == len(index)
    np.testing.assert_array_equal(pw, p0)
    np.testing.assert_array_equal(yw, y0)
    np.testing.assert_array_equal(xw, x0)
    assert sorted(p0.tolist()) == list(range(len(index)))
    assert [index.subjects[p] for p in p0] == s0
    x_other, *_ = _read_all(ds, workers=0, epoch=2)
    assert not np.array_equal(x_other, x0), "another epoch draws other crops and order"


def test_worker_init_sets_one_torch_thread():
    before = torch.get_num_threads()
    try:
        worker_init_fn(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_seeded_subject_split_is_disjoint_and_reproducible(small_demo):
    index = build_index(_c2_files(small_demo))
    split = make_split(index, val_fraction=0.25, seed=5)
    assert not set(split.train_subjects) & set(split.val_subjects)
    assert set(index.subjects[split.train]) == set(split.train_subjects)
    assert set(index.subjects[split.val]) == set(split.val_subjects)
    assert split.train.size + split.val.size == len(index)
    again = make_split(index, val_fraction=0.25, seed=5)
    assert again.val_subjects == split.val_subjects
    others = {make_split(index, val_fraction=0.25, seed=s).val_subjects for s in range(6)}
    assert len(others) > 1


def test_release_split_holds_out_the_whole_release(small_demo):
    index = build_index(_c2_files(small_demo))
    split = make_split(index, val_release="R2")
    assert set(index.releases[split.val]) == {"R2"}
    assert set(index.releases[split.train]) == {"R1"}
    assert not set(split.train_subjects) & set(split.val_subjects)
    with pytest.raises(DataError, match="R9"):
        make_split(index, val_release="R9")


def test_split_needs_two_subjects():
    with pytest.raises(DataError, match="at least 2 subjects"):
        split_subjects(np.array(["NDARAA000001"] * 4, dtype=object))


def test_channel_stats_come_from_training_windows_only(small_demo):
    index = build_index(_c2_files(small_demo))
    split = make_split(index, seed=0)
    stats = compute_channel_stats(index, split.train)
    ds = WindowDataset(index, split.train)
    windows = np.stack([ds[i][0] for i in range(len(ds))])
    np.testing.assert_allclose(stats.mean, windows.mean(axis=(0, 2)), rtol=1e-4, atol=1e-3)
    std = windows.std(axis=(0, 2))
    flat = std < 1e-6
    assert flat[-1], "Cz (the reference) is flat in the demo data"
    np.testing.assert_allclose(stats.std[~flat], std[~flat], rtol=1e-4)
    assert (stats.std[flat] == 1.0).all()
    val_ds = WindowDataset(index, split.val)
    val_stats = channel_stats(val_ds[i][0] for i in range(len(val_ds)))
    assert not np.allclose(val_stats.mean[~flat], stats.mean[~flat])
    normed = WindowDataset(index, split.train, stats=stats)[0][0]
    np.testing.assert_allclose(normed, stats.apply(ds[0][0]), rtol=1e-6)


def test_files_with_different_channels_are_not_mixed(small_demo, tmp_path):
    src = small_demo.challenge2["R1"]
    other = tmp_path / "other.h5"
    with h5py.File(src, "r") as f, h5py.File(other, "w") as g:
        g.create_dataset("data", data=f["data"][:, :64])
        for name in ("targets", "subjects", "p_factors"):
            g.create_dataset(name, data=f[name][()])
        g.attrs.update({k: v for k, v in f.attrs.items() if k != "n_channels"})
    with pytest.raises(DataError, match="channels"):
        build_index([str(src), str(other)])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        build_index([str(tmp_path / "absent.h5")])
