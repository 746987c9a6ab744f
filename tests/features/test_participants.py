"""participants.tsv reading (pipelines.participants): strict rows, canonical ids, NaN for n/a,
errors naming the file and the right line (blank lines counted), --lenient skips bad rows."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipelines.errors import InputDataError
from pipelines.participants import COLUMNS, load_participants, read_participants

HEADER = "participant_id\trelease_number\tsex\tage\tehq_total\tp_factor\tattention\tinternalizing\texternalizing\tsite\n"
GOOD = "sub-NDARAA000001\tR1\tM\t9.5\tn/a\t0.1\t0.2\t0.3\t0.4\tCBIC\n"


def _tsv(tmp_path, text: str, name: str = "participants.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_ids_missing_values_and_extra_columns(tmp_path):
    path = _tsv(
        tmp_path,
        HEADER + GOOD + "sub-NDARAA000002\tR2\t\tN/A\t80\tNA\tn/a\t-1\t2e0\t\n",
    )
    people = read_participants(path)
    assert list(people.columns) == list(COLUMNS)
    assert people["subject_id"].tolist() == ["NDARAA000001", "NDARAA000002"]
    assert people["release"].tolist() == ["R1", "R2"]
    assert people["sex"].tolist() == ["M", None]
    assert people["age"].tolist()[0] == 9.5 and np.isnan(people["age"].iloc[1])
    assert np.isnan(people["ehq_total"].iloc[0]) and people["ehq_total"].iloc[1] == 80.0
    assert people["externalizing"].dtype == np.float64 and people["externalizing"].iloc[1] == 2.0
    extra = read_participants(path, extra_columns=True)
    assert extra["site"].tolist() == ["CBIC", None]


def test_only_participant_id_is_required(tmp_path):
    people = read_participants(_tsv(tmp_path, "participant_id\nsub-NDARAA000001\n"))
    assert people["release"].tolist() == [""] and people["sex"].tolist() == [None]
    assert all(np.isnan(people[c].iloc[0]) for c in ("age", "p_factor", "externalizing"))


@pytest.mark.parametrize(
    ("raw", "code"),
    [("M", "M"), ("f", "F"), ("Male", "M"), ("FEMALE", "F"), ("other", "O"), ("n/a", None)],
)
def test_sex_values_of_the_documented_set_are_coded(tmp_path, raw, code):
    people = read_participants(_tsv(tmp_path, f"participant_id\tsex\nsub-NDARAA000001\t{raw}\n"))
    assert people["sex"].tolist() == [code]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not a readable tab-separated participants file: it holds no header line"),
        ("\n\n", "holds no header line"),
        ("participant_id\nsub-NDARAA000001\nn/a\n", "line 3: empty participant_id"),
        ("participant_id\nsub-NDAR AA\n", "line 2: subject id 'sub-NDAR AA' holds characters"),
        ("participant_id\nNDARAA000001\n", "line 2: participant_id 'NDARAA000001' is not a BIDS"),
        ("participant_id\nSUB-NDARAA000001\n", "line 2: participant_id 'SUB-NDARAA000001'"),
        ("id\tage\nsub-NDARAA000001\t9\n", "no 'participant_id' column"),
        ("participant_id\tage\tage\nsub-NDARAA000001\t9\t9\n", r"column\(s\) \['age'\] appear"),
        ("participant_id\tage\nsub-NDARAA000001\tnine\n", "line 2: column 'age' holds 'nine'"),
        ("participant_id\tage\nsub-NDARAA000001\tnan\n", "line 2: column 'age' holds 'nan'"),
        ("participant_id\tage\nsub-NDARAA000001\t1_0\n", "line 2: column 'age' holds '1_0'"),
        ("participant_id\tsex\nsub-NDARAA000001\tz\n", "line 2: sex 'z' is not one of M, F, O"),
        # the garbage rows: wrong field counts, named with their line
        (HEADER + GOOD + "garbage\n", "line 3: 1 tab-separated field(s), the header has 10"),
        (HEADER + GOOD + "x\ty\tz\n", "line 3: 3 tab-separated field(s), the header has 10"),
        (HEADER + GOOD.rstrip("\n") + "\textra\n", "line 2: 11 tab-separated field"),
    ],
)
def test_bad_files_name_the_file_line_and_problem(tmp_path, text, match):
    path = _tsv(tmp_path, text)
    with pytest.raises(InputDataError, match=match.replace("(s)", r"\(s\)")) as err:
        read_participants(path)
    assert str(path) in str(err.value)


def test_line_numbers_count_blank_lines(tmp_path):
    """The known bug: pandas dropped blank lines, so every later line number was off."""
    path = _tsv(
        tmp_path,
        "participant_id\tage\n\nsub-NDARAA000001\t9\n\n\nsub-NDARAA000002\tnine\n  \n"
        "sub-NDARAA000003\tten\n",
    )
    with pytest.raises(InputDataError) as err:
        read_participants(path)
    msg = str(err.value)
    assert "2 bad row(s)" in msg
    assert "line 6: column 'age' holds 'nine'" in msg and "line 8: column 'age' holds 'ten'" in msg


def test_every_bad_line_is_listed_in_one_error(tmp_path):
    rows = "".join(f"sub-NDARAA{i:06d}\tbad\n" for i in range(14))
    with pytest.raises(InputDataError, match=r"14 bad row\(s\).*line 2:.*line 11:.*and 4 more"):
        read_participants(_tsv(tmp_path, "participant_id\tage\n" + rows))


def test_ids_that_differ_only_in_case_are_one_subject(tmp_path):
    path = _tsv(
        tmp_path,
        "participant_id\tsex\tage\nsub-ndarko4sft63\tM\t9\nsub-NDARKO4SFT63\tm\t9.0\n"
        "sub-NDARAA000001\tF\tn/a\nsub-NDARAA000001\tF\tNA\n",
    )
    people = read_participants(path)
    assert people["subject_id"].tolist() == ["NDARKO4SFT63", "NDARAA000001"]


def test_same_subject_with_different_values_is_a_conflict_naming_both_lines(tmp_path):
    path = _tsv(
        tmp_path,
        "participant_id\tsex\tage\nsub-ndarko4sft63\tM\t9\n\nsub-NDARKO4SFT63\tF\t9\n",
    )
    with pytest.raises(InputDataError) as err:
        read_participants(path)
    msg = str(err.value)
    assert "line 2: conflicts with line 4" in msg
    assert "line 4: subject NDARKO4SFT63 is listed more than once with different values" in msg
    assert "disagree on ['sex']" in msg


def test_non_hbn_ids_that_differ_only_in_case_are_an_error(tmp_path):
    path = _tsv(tmp_path, "participant_id\nsub-ctrl01\nsub-CTRL01\n")
    with pytest.raises(InputDataError, match="'sub-CTRL01' differs only in letter case"):
        read_participants(path)


def test_lenient_skips_bad_rows_and_lists_them(tmp_path, caplog):
    path = _tsv(
        tmp_path,
        HEADER
        + GOOD
        + "garbage\n"
        + "\n"
        + "x\ty\tz\n"
        + "sub-NDARAA000002\tR1\tz\t9\t1\t0\t0\t0\t0\tX\n"
        + "sub-NDARAA000003\tR1\tF\t9\t1\t0\t0\t0\t0\tX\n"
        + "sub-ndaraa000003\tR2\tF\t9\t1\t0\t0\t0\t0\tX\n"
        + "sub-NDARAA000004\tR1\tF\t9\t1\t0\t0\t0\t0\tX\n",
    )
    loaded = load_participants(path, lenient=True)
    assert loaded.frame["subject_id"].tolist() == ["NDARAA000001", "NDARAA000004"]
    assert [p.line for p in loaded.skipped] == [3, 5, 6, 7, 8]
    warning = loaded.warning()
    assert warning.startswith(f"{path}: skipped 5 bad row(s) (--lenient): line 3: 1 tab-separated")
    assert "line 6: sex 'z'" in warning
    with caplog.at_level(logging.WARNING, logger="pipelines.participants"):
        frame = read_participants(path, lenient=True)  # the frame only: the lines are logged
    assert len(frame) == 2 and warning in caplog.text
    assert (
        load_participants(_tsv(tmp_path, HEADER + GOOD, "ok.tsv"), lenient=True).warning() is None
    )


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(InputDataError, match="no such file; check --participants"):
        read_participants(tmp_path / "absent.tsv")
    path = tmp_path / "latin1.tsv"
    path.write_bytes("participant_id\tsite\nsub-NDARAA000001\tZürich\n".encode("utf-16"))
    with pytest.raises(InputDataError, match="latin1.tsv: not a readable"):
        read_participants(path)
    bom = tmp_path / "bom.tsv"
    bom.write_bytes("participant_id\r\nsub-NDARAA000001\r\n".encode("utf-8-sig"))
    assert read_participants(bom)["subject_id"].tolist() == ["NDARAA000001"]
