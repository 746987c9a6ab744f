"""Subject identifiers: one canonical form, ``NDARxxxx`` without the BIDS ``sub-`` prefix.

participants.tsv says ``sub-NDARAB123456``, the EEG2025 HDF5 caches often hold ``NDARAB123456``
(as bytes). Every feature table, Feast entity (join key ``subject_id``), Redis key and MongoDB
``subjects`` document uses the bare form produced here, so the pipelines and tracking agree.

BIDS labels are alphanumeric (``sub-<label>``), so anything else (``sub-NDAR_01``, ``A.B``) is
rejected rather than stored under a key that another reader would spell differently.

HBN ids (``NDAR`` + letters and digits) are upper case: ``sub-ndarko4sft63`` and
``NDARKO4SFT63`` are one subject, ``NDARKO4SFT63``. Other labels keep their case (nothing says
which spelling is right); :func:`case_key` tells when two of them differ only in case.
A change here changes stored ids: bump ``pipelines.build_snapshot.FEATURE_CODE_VERSION`` with it,
so that existing snapshots are rebuilt under the new ids.
"""

from __future__ import annotations

from collections.abc import Iterable

BIDS_PREFIX = "sub-"
#: Prefix of Healthy Brain Network (NDA GUID) ids; such ids are canonically upper case.
HBN_PREFIX = "NDAR"


class SubjectIdError(ValueError):
    """A value that cannot be a subject id (empty, not text, or not a BIDS alphanumeric label)."""


def normalize_subject_id(value: str | bytes) -> str:
    """Canonical subject id: text, surrounding whitespace and a leading ``sub-`` removed, HBN
    ``NDAR`` ids in upper case.

    >>> normalize_subject_id(b"sub-NDARAA000001 ")
    'NDARAA000001'
    >>> normalize_subject_id("sub-ndarko4sft63")
    'NDARKO4SFT63'

    Raises
    ------
    SubjectIdError
        (a ``ValueError``) when the id is empty or holds characters other than ASCII letters and
        digits after the prefix; the message names the id.
    TypeError
        When ``value`` is neither ``str`` nor ``bytes``.
    """
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise SubjectIdError(f"subject id {value!r} is not UTF-8 text") from exc
    elif not isinstance(value, str):
        raise TypeError(f"subject id must be str or bytes, got {type(value).__name__}: {value!r}")
    text = value.strip()
    if text.startswith(BIDS_PREFIX):
        text = text[len(BIDS_PREFIX) :]
    if not text:
        raise SubjectIdError(
            f"subject id {value!r} is empty; expected 'sub-NDARxxxx' or 'NDARxxxx'"
        )
    if not (text.isascii() and text.isalnum()):
        raise SubjectIdError(
            f"subject id {value!r} holds characters other than letters and digits; BIDS subject "
            "labels are alphanumeric ('sub-NDARxxxx' or 'NDARxxxx'). Fix the id in the source file"
        )
    if text[: len(HBN_PREFIX)].upper() == HBN_PREFIX:
        return text.upper()
    return text


def participant_id_to_subject_id(value: str) -> str:
    """Canonical subject id of a BIDS ``participant_id`` (which must read ``sub-<label>``).

    >>> participant_id_to_subject_id("sub-ndarko4sft63")
    'NDARKO4SFT63'

    Raises
    ------
    SubjectIdError
        When the value does not start with ``sub-`` (BIDS spells the prefix in lower case) or
        its label is not letters and digits; the message names the value.
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not text.startswith(BIDS_PREFIX):
        raise SubjectIdError(
            f"participant_id {value!r} is not a BIDS participant id: expected 'sub-<label>' "
            "with a label of letters and digits, e.g. 'sub-NDARAB123456'"
        )
    return normalize_subject_id(text)


def case_key(subject_id: str) -> str:
    """Key under which canonical ids that differ only in letter case collide."""
    return subject_id.casefold()


def normalize_subject_ids(values: Iterable[str | bytes]) -> list[str]:
    """:func:`normalize_subject_id` over an iterable (keeps order and duplicates)."""
    return [normalize_subject_id(v) for v in values]


__all__ = [
    "BIDS_PREFIX",
    "HBN_PREFIX",
    "SubjectIdError",
    "case_key",
    "normalize_subject_id",
    "normalize_subject_ids",
    "participant_id_to_subject_id",
]
