"""The helpers shared by pipelines and tracking: subject ids (services.ids), file hashing and
atomic writes (services.files), and the participants.tsv parser both use (pipelines.participants)."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest

from pipelines.errors import InputDataError
from pipelines.hdf5_layout import normalize_subject_id as pipelines_normalize
from pipelines.participants import COLUMNS, read_participants
from services.files import (
    atomic_copy,
    atomic_path,
    atomic_write_bytes,
    atomic_write_chunks,
    atomic_write_text,
    sha256_file,
)
from services.ids import (
    SubjectIdError,
    case_key,
    normalize_subject_id,
    normalize_subject_ids,
    participant_id_to_subject_id,
)


# --- subject ids ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        "sub-NDARAB123",
        "NDARAB123",
        b"NDARAB123 ",
        b"sub-NDARAB123",
        " sub-NDARAB123\t",
        np.bytes_(b"NDARAB123"),
    ],
)
def test_normalize_subject_id_canonical_form(raw):
    assert normalize_subject_id(raw) == "NDARAB123"


def test_pipelines_uses_the_same_normaliser():
    assert pipelines_normalize is normalize_subject_id


@pytest.mark.parametrize("raw", ["", "  ", "sub-", b"sub- "])
def test_empty_subject_id_is_rejected(raw):
    with pytest.raises(SubjectIdError, match="is empty"):
        normalize_subject_id(raw)


@pytest.mark.parametrize("raw", ["sub-NDAR_01", "NDAR-01", "A.B", "NDAR 01", "NDARÄ1"])
def test_non_alphanumeric_subject_id_is_rejected_naming_it(raw):
    with pytest.raises(ValueError, match="letters and digits") as info:
        normalize_subject_id(raw)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(
    "raw", ["sub-ndarko4sft63", "NDARko4sft63", b"ndarKO4SFT63", "sub-NdArKO4SFT63"]
)
def test_hbn_ids_are_upper_case(raw):
    assert normalize_subject_id(raw) == "NDARKO4SFT63"


def test_other_ids_keep_their_case_and_collide_by_case_key():
    assert normalize_subject_id("sub-ctrl01") == "ctrl01"
    assert case_key("ctrl01") == case_key("CTRL01") != case_key("ctrl02")


@pytest.mark.parametrize("raw", ["NDARAB123", "SUB-NDARAB123", "sub_NDARAB123", "sub-NDAR_1"])
def test_bids_participant_ids_need_the_sub_prefix_and_a_label(raw):
    with pytest.raises(SubjectIdError, match=repr(raw)):
        participant_id_to_subject_id(raw)
    assert participant_id_to_subject_id(" sub-ndarab123 ") == "NDARAB123"


def test_bad_subject_id_types():
    with pytest.raises(TypeError, match="str or bytes"):
        normalize_subject_id(12)  # type: ignore[arg-type]
    with pytest.raises(SubjectIdError, match="not UTF-8"):
        normalize_subject_id(b"\xff\xfe")
    assert normalize_subject_ids(["sub-A1", b"A1", "B2"]) == ["A1", "A1", "B2"]


# --- participants.tsv ----------------------------------------------------------------------------
HEADER = "participant_id\trelease_number\tsex\tage\tp_factor\tsite\n"


def test_participants_missing_values_and_extra_columns(tmp_path):
    path = tmp_path / "participants.tsv"
    path.write_text(
        HEADER + "sub-NDARAA001\tR1\tM\tNA\t0.5\tCBIC\nsub-NDARAA002\tR1\tn/a\t9\t\tn/a\n"
    )
    frame = read_participants(path)
    assert tuple(frame.columns) == COLUMNS
    extra = read_participants(path, extra_columns=True)
    assert tuple(extra.columns) == (*COLUMNS, "site")
    a, b = extra.to_dict("records")
    assert a["subject_id"] == "NDARAA001" and np.isnan(a["age"]) and a["site"] == "CBIC"
    assert b["sex"] is None and b["age"] == 9.0 and np.isnan(b["p_factor"]) and b["site"] is None


def test_participants_bad_id_and_duplicates_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text(HEADER + "sub-NDARAA001\tR1\tM\t9\t0\tX\nsub-NDAR_02\tR1\tM\t9\t0\tX\n")
    with pytest.raises(
        InputDataError, match=r"bad.tsv: 1 bad row\(s\): line 3: subject id 'sub-NDAR_02'"
    ):
        read_participants(bad)
    dup = tmp_path / "dup.tsv"
    dup.write_text(HEADER + "sub-NDARAA001\tR1\tM\t9\t0\tX\nsub-ndaraa001\tR2\tM\t9\t0\tX\n")
    with pytest.raises(InputDataError, match=r"dup.tsv: 2 bad row\(s\).*listed more than once"):
        read_participants(dup)


# --- files ---------------------------------------------------------------------------------------
def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # several read blocks and a partial one
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_atomic_path_replaces_on_success(tmp_path):
    dest = tmp_path / "sub" / "state.json"  # parent created
    atomic_write_text(dest, "one")
    atomic_write_text(dest, "two")
    assert dest.read_text() == "two"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    atomic_write_bytes(dest, b"three", mode=0o600)
    assert dest.read_bytes() == b"three" and stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["state.json"]


def test_atomic_path_failure_leaves_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"old")
    seen = []
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(dest) as tmp:
        seen.append(tmp)
        assert tmp.parent == dest.parent and tmp.name.startswith(".model.pt.")
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("disk on fire")
    assert dest.read_bytes() == b"old"
    assert not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    # and when there was no file before, there is still none
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_write_chunks_hashes_what_it_writes(tmp_path):
    dest = tmp_path / "blobs" / "copy.bin"
    chunks = [os.urandom(1000), b"", os.urandom(17)]
    digest = atomic_write_chunks(dest, iter(chunks))
    assert dest.read_bytes() == b"".join(chunks)
    assert digest == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_atomic_write_chunks_broken_stream_leaves_nothing(tmp_path):
    dest = tmp_path / "download.bin"
    dest.write_bytes(b"previous")

    def broken():
        yield b"first half"
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        atomic_write_chunks(dest, broken())
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["download.bin"]


def test_atomic_copy_returns_the_copy_checksum(tmp_path):
    src = tmp_path / "best.pt"
    src.write_bytes(os.urandom(3 * (1 << 20) + 5))
    dest = tmp_path / "spool" / "blob.bin"
    assert atomic_copy(src, dest) == sha256_file(src) == sha256_file(dest)
    assert dest.read_bytes() == src.read_bytes()
