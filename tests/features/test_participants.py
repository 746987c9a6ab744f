"""participants.tsv reading (pipelines.participants): canonical ids, NaN for n/a, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import InputDataError
from pipelines.participants import COLUMNS, read_participants

HEADER = "participant_id\trelease_number\tsex\tage\tehq_total\tp_factor\tattention\tinternalizing\texternalizing\tsite\n"


def _tsv(tmp_path, text: str, name: str = "participants.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_ids_missing_values_and_extra_columns(tmp_path):
    path = _tsv(
        tmp_path,
        HEADER
        + "sub-NDARAA000001\tR1\tM\t9.5\tn/a\t0.1\t0.2\t0.3\t0.4\tCBIC\n"
        + "NDARAA000002\tR2\t\tN/A\t80\tNA\tn/a\t-1\t2\t\n",
    )
    people = read_participants(path)
    assert list(people.columns) == list(COLUMNS)
    assert people["subject_id"].tolist() == ["NDARAA000001", "NDARAA000002"]
    assert people["release"].tolist() == ["R1", "R2"]
    assert people["sex"].tolist() == ["M", None]
    assert people["age"].tolist()[0] == 9.5 and np.isnan(people["age"].iloc[1])
    assert np.isnan(people["ehq_total"].iloc[0]) and people["ehq_total"].iloc[1] == 80.0
    assert people["externalizing"].dtype == np.float64
    extra = read_participants(path, extra_columns=True)
    assert extra["site"].tolist() == ["CBIC", None]


def test_only_participant_id_is_required(tmp_path):
    people = read_participants(_tsv(tmp_path, "participant_id\nsub-NDARAA000001\n"))
    assert people["release"].tolist() == [""] and people["sex"].tolist() == [None]
    assert all(np.isnan(people[c].iloc[0]) for c in ("age", "p_factor", "externalizing"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not a readable tab-separated participants file"),
        ("participant_id\nsub-NDARAA000001\nn/a\n", r"empty participant_id on line\(s\) \[3\]"),
        ("participant_id\nsub-NDAR AA\n", "line 2"),
        ("id\tage\nsub-NDARAA000001\t9\n", "no 'participant_id' column"),
        ("participant_id\tage\nsub-NDARAA000001\tnine\n", "column 'age' line 2 holds 'nine'"),
        ("participant_id\nsub-NDARAA000001\nNDARAA000001\n", "listed more than once"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, text, match):
    path = _tsv(tmp_path, text)
    with pytest.raises(InputDataError, match=match) as err:
        read_participants(path)
    assert str(path) in str(err.value)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(InputDataError, match="no such file; check --participants"):
        read_participants(tmp_path / "absent.tsv")
    path = tmp_path / "latin1.tsv"
    path.write_bytes("participant_id\tsite\nsub-NDARAA000001\tZürich\n".encode("utf-16"))
    with pytest.raises(InputDataError, match="latin1.tsv: not a readable"):
        read_participants(path)
