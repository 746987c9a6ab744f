"""Append-only, fsynced JSON-lines spool of tracker writes made while MongoDB is away.

One file per tracker process, ``<spool_dir>/spool-<host>-<pid>-<random>.jsonl``; each line is one
op record (see :mod:`tracking.ops`) in MongoDB Extended JSON (relaxed), so ObjectIds, dates and
NaN survive the round trip. The owning process holds an exclusive ``flock`` on its file while
it is open, so ``eegfs runs sync`` replays only files whose writer has exited (or that a live
tracker has closed) and never races a live writer. Files with uploads keep a snapshot of the
checkpoint under ``<spool_dir>/blobs/`` until it is in GridFS.

A process killed in the middle of a write may leave a truncated last line: it is reported and
skipped (that write never returned to its caller as spooled). A bad line anywhere else stops
the replay with an error naming the file and line, and the file is kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS, JSONOptions

from services.files import fsync_dir
from tracking.errors import SpoolError

log = logging.getLogger(__name__)

_LOAD_OPTIONS = JSONOptions(tz_aware=True, tzinfo=dt.UTC)
SPOOL_GLOB = "spool-*.jsonl"


def default_spool_dir(data_dir: Path) -> Path:
    """Where trackers spool by default: ``<data_dir>/tracking/spool``."""
    return Path(data_dir) / "tracking" / "spool"


def encode(record: dict[str, Any]) -> str:
    return json_util.dumps(record, json_options=RELAXED_JSON_OPTIONS)


def decode(line: str) -> dict[str, Any]:
    return json_util.loads(line, json_options=_LOAD_OPTIONS)


class SpoolFile:
    """The spool file of one tracker: created on the first append, locked while open."""

    def __init__(self, spool_dir: Path) -> None:
        self.dir = Path(spool_dir)
        host = socket.gethostname().replace("-", "_") or "host"
        self.path = self.dir / f"spool-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._fh = None
        self.count = 0  # records appended and not yet cleared

    @property
    def blob_dir(self) -> Path:
        return self.dir / "blobs"

    def _open(self):
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open while spooling
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fh = fh
            fsync_dir(self.dir)
        return self._fh

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` as lines, then flush and fsync (durable when this returns)."""
        if not records:
            return
        fh = self._open()
        fh.write("".join(encode(r) + "\n" for r in records))
        fh.flush()
        os.fsync(fh.fileno())
        self.count += len(records)

    def records(self) -> Iterator[dict[str, Any]]:
        """The records appended so far, in order."""
        if self._fh is None:
            return iter(())
        return read_records(self.path)

    def clear(self) -> None:
        """Delete the file (everything in it has been applied)."""
        if self._fh is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._fh.close()
            self._fh = None
        self.count = 0

    def close(self) -> None:
        """Release the lock; a non-empty file stays for ``eegfs runs sync``."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            if self.count:
                log.warning(
                    "%d tracking writes are still in the spool %s: run `eegfs runs sync` when "
                    "MongoDB answers",
                    self.count,
                    self.path,
                )


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a spool file in order; a truncated last line is skipped with a warning."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # The text ends with "\n" when the last write completed, leaving an empty final element.
    complete, tail = lines[:-1], lines[-1]
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            yield decode(line)
        except ValueError as exc:
            raise SpoolError(
                f"{path}: line {number} is not a valid spool record ({exc}); the file is kept. "
                "Fix or remove that line and run `eegfs runs sync` again"
            ) from exc
    if tail.strip():
        log.warning("%s: skipping a truncated last line (a write interrupted mid-way)", path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[bool]:
    """Try to lock a spool file; yields False when a live tracker holds it."""
    try:
        fh = open(path, "a", encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        fh.close()
