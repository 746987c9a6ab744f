"""UTC timestamps at BSON precision (milliseconds), so spooled and stored values are equal."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC, truncated to whole milliseconds (what BSON dates hold)."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
