"""Subject identifiers for the pipelines: re-exports :mod:`services.ids` (the one normaliser
shared with ``tracking``, so Feast keys and MongoDB subject keys agree)."""

from __future__ import annotations

from services.ids import BIDS_PREFIX, SubjectIdError, normalize_subject_id, normalize_subject_ids

__all__ = ["BIDS_PREFIX", "SubjectIdError", "normalize_subject_id", "normalize_subject_ids"]
