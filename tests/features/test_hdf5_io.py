"""HDF5 reading: layout detection, chunked reading paths, and every bad input of the contract."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from features_testlib import write_h5

from pipelines.errors import InputDataError
from pipelines.hdf5_io import open_windows
from pipelines.hdf5_layout import CHALLENGE1_LAYOUT, default_channel_names, layout_from_mapping


def _read_all(w, chunk=4, workers=2):
    blocks = list(w.iter_chunks(chunk, workers=workers))
    assert [s for s, _ in blocks] == sorted(s for s, _ in blocks)
    return np.concatenate([b for _, b in blocks])


def test_detects_both_layouts_of_the_demo_files(small_demo):
    for release, path in small_demo.challenge2.items():
        with open_windows(path) as w:
            assert (w.layout.name, w.layout.challenge, w.n_times, w.sfreq) == (
                "challenge2",
                2,
                400,
                100.0,
            )
            assert w.release == release and set(w.labels) == {"externalizing", "p_factor"}
            assert set(w.subject_ids) == set(small_demo.subjects[release])
            assert w.channel_names == default_channel_names(129) and w.channel_names[-1] == "Cz"
            assert w.reference_mask.sum() == 1 and w.reference_mask[-1]
            assert w.direct_plan is not None  # gzip + shuffle, one window per chunk
            np.testing.assert_array_equal(_read_all(w, chunk=5), w.dataset[()])
    for path in small_demo.challenge1.values():
        with open_windows(path) as w:
            assert (w.layout.name, w.n_times, set(w.labels)) == (
                "challenge1",
                200,
                {"response_time"},
            )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shuffle": False},
        {"chunks": (3, 129, 400)},  # several windows per chunk, last chunk partial
        {"chunks": (2, 64, 400)},  # chunks that split channels: h5py fallback
        {"chunks": None, "compression": None},  # contiguous: h5py fallback
    ],
)
def test_every_storage_layout_reads_the_same_values(tmp_path, kwargs):
    spec = write_h5(
        tmp_path / "x.h5",
        subjects=["NDARAA000001", "NDARAA000002"],
        windows_per_subject=4,
        **kwargs,
    )
    with open_windows(spec.path) as w:
        for chunk in (1, 3, 8, 100):
            np.testing.assert_array_equal(_read_all(w, chunk=chunk), spec.data)


def test_explicit_mapping_and_ids_with_sub_prefix(tmp_path):
    path = tmp_path / "custom.h5"
    x = np.zeros((4, 3, 200), np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x)
        f.create_dataset("who", data=np.array([b"sub-NDARAA000001"] * 2 + [b"NDARAA000002"] * 2))
        f.create_dataset("rt", data=np.ones(4))
        f.attrs["sfreq"] = 100.0
    lay = layout_from_mapping(
        {"data": "X", "subjects": "who", "challenge": "1", "label:response_time": "rt"},
        base=CHALLENGE1_LAYOUT,
    )
    with open_windows(path, layout=lay) as w:
        assert w.subject_ids == ["NDARAA000001"] * 2 + ["NDARAA000002"] * 2
        assert w.channel_names == ["ch0", "ch1", "ch2"] and w.layout.challenge == 1
        assert w.labels["response_time"].tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="unknown dataset mapping key"):
        layout_from_mapping({"dataset": "X"})


def test_units_and_channel_names_attributes(tmp_path):
    spec = write_h5(
        tmp_path / "u.h5",
        n_channels=3,
        attrs={"units": "uV", "ch_names": np.array([b"Fz", b"Pz", b"Oz"])},
    )
    with open_windows(spec.path) as w:
        assert w.to_uv == 1.0 and w.channel_names == ["Fz", "Pz", "Oz"]


def test_sfreq_may_be_given_when_the_file_has_none(tmp_path):
    spec = write_h5(tmp_path / "nosfreq.h5", attrs={"sfreq": None})
    with pytest.raises(InputDataError, match="no 'sfreq'.*--sfreq"):
        open_windows(spec.path)
    with open_windows(spec.path, sfreq=100.0) as w:
        assert w.sfreq == 100.0
    spec2 = write_h5(tmp_path / "sfreq.h5")
    with pytest.raises(InputDataError, match="disagrees"):
        open_windows(spec2.path, sfreq=250.0)


# --- bad inputs: one clear error naming the file, the dataset and the problem -------------------
def test_missing_windows_dataset(tmp_path):
    spec = write_h5(tmp_path / "nodata.h5", drop=("data",))
    with pytest.raises(InputDataError) as err:
        open_windows(spec.path)
    msg = str(err.value)
    assert str(spec.path) in msg and "'data'" in msg and "'eeg'" in msg and "--map" in msg


def test_missing_subjects_dataset(tmp_path):
    spec = write_h5(tmp_path / "nosub.h5", layout="challenge1", drop=("subject_ids",))
    with pytest.raises(
        InputDataError, match=r"missing dataset 'subject_ids'.*found \['eeg', 'labels'\]"
    ):
        open_windows(spec.path)


def test_wrong_rank(tmp_path):
    spec = write_h5(tmp_path / "rank2.h5", data=np.zeros((6, 400), np.float32), chunks=None)
    with pytest.raises(
        InputDataError, match=r"rank2.h5: dataset 'data' has rank 2 .*expected rank 3"
    ):
        open_windows(spec.path)


def test_per_window_length_mismatch(tmp_path):
    spec = write_h5(tmp_path / "len.h5")
    with h5py.File(spec.path, "a") as f:
        del f["targets"]
        f.create_dataset("targets", data=np.zeros(5))
    with pytest.raises(
        InputDataError,
        match=r"len.h5: dataset 'targets' \(externalizing\) has shape \(5,\), expected \(6,\)",
    ):
        open_windows(spec.path)
    spec = write_h5(tmp_path / "sublen.h5")
    with h5py.File(spec.path, "a") as f:
        del f["subjects"]
        f.create_dataset("subjects", data=np.array([b"NDARAA000001"] * 7))
    with pytest.raises(
        InputDataError, match=r"dataset 'subjects' has shape \(7,\), expected \(6,\)"
    ):
        open_windows(spec.path)


@pytest.mark.parametrize(
    ("bad", "found"),
    [("NDAR_AA02", "holds characters other than letters and digits"), ("sub-", "is empty")],
)
def test_bad_subject_id_names_file_dataset_and_id(tmp_path, bad, found):
    spec = write_h5(
        tmp_path / "ids.h5",
        layout="challenge1",
        subjects=["NDARAA000001", bad],
        windows_per_subject=2,
    )
    with pytest.raises(InputDataError) as err:
        open_windows(spec.path)
    msg = str(err.value)
    assert msg.startswith(f"{spec.path}: subject id {bad!r}") and found in msg
    assert "(dataset 'subject_ids', window 2)" in msg


def test_inconsistent_channel_and_sample_attributes(tmp_path):
    spec = write_h5(tmp_path / "attrs.h5", attrs={"n_channels": 128})
    with pytest.raises(InputDataError, match=r"attribute n_channels=128 disagrees"):
        open_windows(spec.path)
    spec = write_h5(tmp_path / "attrs1.h5", layout="challenge1", attrs={"n_timepoints": 250})
    with pytest.raises(InputDataError, match=r"n_timepoints=250 disagrees"):
        open_windows(spec.path)
    spec = write_h5(tmp_path / "names.h5", n_channels=3, attrs={"ch_names": np.array([b"a", b"b"])})
    with pytest.raises(InputDataError, match="'ch_names' lists 2 channels, the windows have 3"):
        open_windows(spec.path)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"this is not HDF5" * 100)
    with pytest.raises(InputDataError, match="garbage.h5: not a readable HDF5 file"):
        open_windows(path)
    with pytest.raises(InputDataError, match="no such file"):
        open_windows(tmp_path / "absent.h5")


def test_truncated_file(tmp_path):
    spec = write_h5(tmp_path / "trunc.h5", windows_per_subject=10)
    raw = spec.path.read_bytes()
    # cut the file in the middle of the window chunks (metadata at the start stays readable)
    spec.path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputDataError) as err, open_windows(spec.path) as w:
        _read_all(w)
    assert (
        "trunc.h5" in str(err.value) and "truncated" in str(err.value) and "Fix" in str(err.value)
    )


def test_corrupt_chunk_bytes(tmp_path):
    spec = write_h5(tmp_path / "corrupt.h5", windows_per_subject=4)
    with h5py.File(spec.path, "r") as f:
        offset = f["data"].id.get_chunk_info(3).byte_offset
    raw = bytearray(spec.path.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64
    spec.path.write_bytes(bytes(raw))
    match = r"corrupt.h5: dataset 'data': chunk at window 3 does not inflate"
    with pytest.raises(InputDataError, match=match), open_windows(spec.path) as w:
        _read_all(w)


# --- the rest of the contract (pipelines.hdf5_layout) -------------------------------------------
def _bare(path, data=None, **attrs):
    """A file with only a windows dataset and subjects (sfreq 100 unless given)."""
    data = np.zeros((2, 3, 50), np.float32) if data is None else data
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("subjects", data=np.array([b"NDARAA000001"] * data.shape[0]))
        f.attrs.update({"sfreq": 100.0, **attrs})
    return path


@pytest.mark.parametrize(
    ("data", "attrs", "match"),
    [
        (np.zeros((2, 3, 50), np.int16), {}, "has dtype int16, expected float32/float64"),
        (np.zeros((0, 3, 50), np.float32), {}, r"is empty \(shape \(0, 3, 50\)\)"),
        (None, {"sfreq": 0.0}, "sfreq=0.0 is not a positive number of Hz"),
        (None, {"units": "furlongs"}, "attribute units='furlongs'"),
    ],
)
def test_bad_windows_dataset_or_attributes(tmp_path, data, attrs, match):
    path = _bare(tmp_path / "bad.h5", data, **attrs)
    with pytest.raises(InputDataError, match=match) as err:
        open_windows(path)
    assert str(path) in str(err.value)


def test_ambiguous_layout_and_groups_where_datasets_belong(tmp_path):
    path = _bare(tmp_path / "both.h5")
    with h5py.File(path, "a") as f:
        f.create_dataset("eeg", data=np.zeros((2, 3, 50), np.float32))
    with pytest.raises(InputDataError, match="both 'data' and 'eeg'.*--layout"):
        open_windows(path)
    path = _bare(tmp_path / "group.h5")
    with h5py.File(path, "a") as f:
        del f["subjects"]
        f.create_group("subjects")
    with pytest.raises(InputDataError, match="'subjects' is a group, expected a dataset"):
        open_windows(path)


def test_channel_names_from_a_dataset_or_the_caller(tmp_path):
    path = _bare(tmp_path / "named.h5")
    with h5py.File(path, "a") as f:
        f.create_dataset("ch_names", data=np.array([b"Fz", b"Cz", b"Pz"]))
    with open_windows(path) as w:
        assert w.channel_names == ["Fz", "Cz", "Pz"] and w.reference_mask.tolist() == [0, 1, 0]
    path = _bare(tmp_path / "plain.h5")
    with open_windows(path, channel_names=["a", "b", "c"]) as w:
        assert w.channel_names == ["a", "b", "c"]
    with pytest.raises(InputDataError, match="2 channel names given, the windows have 3"):
        open_windows(path, channel_names=["a", "b"])
    with pytest.raises(InputDataError, match="channel names are not unique"):
        open_windows(path, channel_names=["a", "b", "a"])


def test_layout_arguments_are_checked():
    with pytest.raises(ValueError, match="challenge must be 1 or 2, got 3"):
        layout_from_mapping({"challenge": "3"})
    with pytest.raises(ValueError, match="challenge must be 1 or 2, got 'two'"):
        layout_from_mapping({"challenge": "two"})
