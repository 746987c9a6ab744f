"""How the tracking commands print documents: JSON, table cells and coloured statuses."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tracking.status import COMPLETED, FAILED, RUNNING, STALE, STOPPED

#: rich colour of each run status in tables.
STATUS_STYLE = {
    RUNNING: "cyan",
    COMPLETED: "green",
    FAILED: "red",
    STOPPED: "yellow",
    STALE: "magenta",
}


def dumps_json(value: Any) -> str:
    """``value`` (MongoDB documents included: ObjectIds, dates) as indented relaxed JSON."""
    from bson import json_util
    from bson.json_util import RELAXED_JSON_OPTIONS

    return json.dumps(
        json.loads(json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS)), indent=2
    )


def cell(value: Any) -> str:
    """A table cell: ``-`` for None, 4 significant digits, minutes for times, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def status_markup(status: str) -> str:
    """``status`` in its colour (rich markup)."""
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


__all__ = ["STATUS_STYLE", "cell", "dumps_json", "status_markup"]
