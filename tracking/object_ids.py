"""ObjectId parsing: a malformed id is an error, never a query that silently matches nothing."""

from __future__ import annotations

from bson import ObjectId
from bson.errors import InvalidId

from tracking.errors import InvalidIdError


def to_object_id(value: object, what: str = "experiment id") -> ObjectId:
    """``value`` as an ObjectId; a 24-hex-digit string is accepted.

    Raises
    ------
    InvalidIdError
        When ``value`` is neither an ObjectId nor a 24-character hexadecimal string.
    """
    if isinstance(value, ObjectId):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return ObjectId(text)
        except InvalidId as exc:
            raise InvalidIdError(
                f"{what} {value!r} is not a valid ObjectId: expected 24 hexadecimal characters "
                f"(like '65f0c2a1b3d4e5f607182930'), got {len(text)} characters; "
                "copy the full id from `eegfs runs list`"
            ) from exc
    raise InvalidIdError(
        f"{what} must be an ObjectId or a 24-hex-digit string, got {type(value).__name__} {value!r}"
    )
