"""Subject identifiers: one canonical form, ``NDARxxxx`` without the BIDS ``sub-`` prefix.

participants.tsv says ``sub-NDARAB123456``, the EEG2025 HDF5 caches often hold ``NDARAB123456``
(as bytes). Every table, Feast entity (join key ``subject_id``) and Redis key uses the bare form.
"""

from __future__ import annotations

from collections.abc import Iterable

BIDS_PREFIX = "sub-"


def normalize_subject_id(value: str | bytes) -> str:
    """Canonical subject id: text, surrounding whitespace and a leading ``sub-`` removed.

    >>> normalize_subject_id(b"sub-NDARAA000001 ")
    'NDARAA000001'
    """
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="strict")
    elif not isinstance(value, str):
        raise TypeError(f"subject id must be str or bytes, got {type(value).__name__}: {value!r}")
    text = value.strip()
    if text.startswith(BIDS_PREFIX):
        text = text[len(BIDS_PREFIX) :]
    return text


def normalize_subject_ids(values: Iterable[str | bytes]) -> list[str]:
    """:func:`normalize_subject_id` over an iterable (keeps order and duplicates)."""
    return [normalize_subject_id(v) for v in values]


__all__ = ["BIDS_PREFIX", "normalize_subject_id", "normalize_subject_ids"]
