"""The background writer: applies tracker ops in order, spools them while MongoDB is away.

Callers only put op records on an in-memory queue, so a tracking call never waits for the
network. One daemon thread takes the records in order and either applies them (server
answering) or appends them to the fsynced spool (server away, or older records still spooled,
which keeps the order). While offline it retries with exponential backoff; once a ping
succeeds it replays the spool from the start (every op is idempotent, so a replay interrupted
by a second outage is simply repeated), deletes it and goes back online.

A write the server rejects for good (not a connection problem) is logged, counted and written
to ``<spool_dir>/rejected-<pid>.jsonl`` instead of blocking the writes behind it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymongo

from services.connections import error_reason
from tracking.ops import ApplyError, OpApplier, is_transient
from tracking.spool import SpoolFile, encode

log = logging.getLogger(__name__)

#: Records taken from the queue per round (one fsync per round while offline).
MAX_BATCH = 500


@dataclass
class _Barrier:
    done: threading.Event = field(default_factory=threading.Event)
    synced: bool = False
    rejected: int = 0


class _Stop:
    pass


class _Retry:
    """Try to reconnect now (a read or an explicit flush wants the server)."""


class _Offline(Exception):
    """The server stopped answering at op ``index`` of a list."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause


class Writer:
    """Background thread applying op records to MongoDB, with a spool fallback.

    Parameters
    ----------
    client:
        pymongo client (short timeouts).
    spool:
        Spool file for this process.
    on_connect:
        Called (in the writer thread) the first time the server answers, e.g. to create indexes.
    retry_s, max_retry_s:
        First and largest wait between reconnection attempts while offline, seconds.
    ping_timeout_s:
        Limit of one reconnection ping, seconds.
    """

    def __init__(
        self,
        client: pymongo.MongoClient,
        spool: SpoolFile,
        *,
        on_connect: Callable[[], None] | None = None,
        retry_s: float = 0.25,
        max_retry_s: float = 5.0,
        ping_timeout_s: float = 1.0,
    ) -> None:
        self.client = client
        self.spool = spool
        self.applier = OpApplier(client)
        self._on_connect = on_connect
        self._connected_once = False
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._ping_timeout_s = ping_timeout_s
        self._backoff = retry_s
        self._next_retry = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.online = False  # becomes True after the first successful connection
        self.applied = 0
        self.spooled = 0
        self.rejected = 0
        self.last_error: str | None = None
        #: The error that took the writer offline (tells a refused login from a silent server).
        self.last_exception: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eegfs-tracking-writer", daemon=True)
        self._thread.start()

    # --- caller side --------------------------------------------------------------------------
    def submit(self, op: dict[str, Any]) -> None:
        """Queue one op record (returns at once)."""
        if self._stopped.is_set():
            raise RuntimeError("the tracking writer is stopped")
        self._queue.put(op)

    def flush(self, timeout_s: float | None = None, *, retry: bool = True) -> bool:
        """Wait until every op queued so far is applied or spooled.

        With ``retry``, a writer that is offline tries to reconnect (and replay) right away
        instead of waiting for its next scheduled attempt. Returns True when all of them were
        acknowledged by MongoDB (durably: see tracking/database.py): nothing left in the spool
        and none refused.
        """
        if not self._thread.is_alive():
            return self.online and self.spool.count == 0 and self.rejected == 0
        barrier = _Barrier()
        if retry:
            self._queue.put(_Retry())
        self._queue.put(barrier)
        barrier.done.wait(timeout_s)
        return barrier.done.is_set() and barrier.synced and barrier.rejected == 0

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Apply or spool what is queued, try a last replay, close the spool; True if synced."""
        if not self._thread.is_alive():
            return self.online and self.spool.count == 0
        barrier = _Barrier()
        self._queue.put(_Retry())  # a last reconnection attempt when offline
        self._queue.put(barrier)
        self._queue.put(_Stop())
        self._stopped.set()
        barrier.done.wait(timeout_s)
        self._thread.join(timeout_s)
        return barrier.synced

    @property
    def pending_in_spool(self) -> int:
        return self.spool.count

    # --- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        self._try_connect()
        stopping = False
        while not stopping:
            stopping = self._handle(self._next_items())
            if not self._synced() and time.monotonic() >= self._next_retry:
                self._try_connect()
        self._drain()
        self.spool.close()

    def _next_items(self) -> list[Any]:
        """Up to MAX_BATCH queued items; waits for the first until the next retry is due."""
        wait = None if self._synced() else max(0.0, self._next_retry - time.monotonic())
        try:
            items = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(items) < MAX_BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _handle(self, items: list[Any]) -> bool:
        """Process ``items`` in order (ops in groups between markers); True after a _Stop."""
        stopping = False
        ops: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, dict):
                ops.append(item)
                continue
            self._process(ops)
            ops = []
            if isinstance(item, _Stop):
                stopping = True
            elif isinstance(item, _Retry):
                if not self._synced():
                    self._try_connect(force=True)
            else:
                item.synced = self._synced()
                item.rejected = self.rejected
                item.done.set()
        self._process(ops)
        return stopping

    def _drain(self) -> None:
        """Writes that raced with stop(): apply or spool them too."""
        leftovers = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, dict):
                leftovers.append(item)
            elif isinstance(item, _Barrier):
                item.done.set()
        self._process(leftovers)

    def _synced(self) -> bool:
        return self.online and self.spool.count == 0

    def _process(self, ops: list[dict[str, Any]]) -> None:
        if not ops:
            return
        if not self._synced():
            self._spool(ops)
            return
        try:
            self._apply(ops)
        except _Offline as offline:
            self._go_offline(offline.cause)
            self._spool(ops[offline.index :])

    def _apply(self, ops: list[dict[str, Any]]) -> None:
        """Apply ``ops`` in groups; a rejected op is set aside, a lost connection raises _Offline."""
        start = 0
        while start < len(ops):
            try:
                self.applier.apply_many(ops[start:])
                self.applied += len(ops) - start
                return
            except ApplyError as exc:
                failed = start + exc.index
                self.applied += exc.index
                if is_transient(exc.cause):
                    raise _Offline(failed, exc.cause) from exc
                # One op of the group is bad: apply the group's ops one by one to find it.
                try:
                    self.applier.apply(ops[failed])
                    self.applied += 1
                except Exception as single:  # noqa: BLE001 - sorted below
                    if is_transient(single):
                        raise _Offline(failed, single) from single
                    self._reject(ops[failed], single)
                start = failed + 1

    def _spool(self, ops: list[dict[str, Any]]) -> None:
        self.spool.append(ops)
        self.spooled += len(ops)

    def _go_offline(self, exc: BaseException) -> None:
        if self.online:
            log.warning(
                "MongoDB stopped answering (%s); spooling tracking writes to %s",
                type(exc).__name__,
                self.spool.path,
            )
        self.online = False
        self.last_error = error_reason(exc)  # one line, without pymongo's topology dump
        self.last_exception = exc
        self._next_retry = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_retry_s)

    def _try_connect(self, *, force: bool = False) -> None:
        """Ping; on success run on_connect once, replay the spool and go online."""
        if not force and time.monotonic() < self._next_retry:
            return
        try:
            with pymongo.timeout(self._ping_timeout_s):
                self.client.admin.command("ping")
            if not self._connected_once and self._on_connect is not None:
                self._on_connect()
            self._connected_once = True
            self._replay()
        except Exception as exc:  # noqa: BLE001 - any failure here means "still offline"
            self._go_offline(exc)
            return
        if not self.online and self.last_error is not None:
            log.warning("MongoDB answers again; spooled tracking writes replayed")
        self.online = True
        self._backoff = self._retry_s

    def _replay(self) -> None:
        if self.spool.count == 0:
            return
        batch: list[dict[str, Any]] = []
        for op in self.spool.records():
            batch.append(op)
            if len(batch) >= MAX_BATCH:
                self._replay_batch(batch)
                batch = []
        self._replay_batch(batch)
        self.spool.clear()

    def _replay_batch(self, batch: list[dict[str, Any]]) -> None:
        try:
            self._apply(batch)
        except _Offline as offline:
            raise offline.cause from offline

    def _reject(self, op: dict[str, Any], exc: BaseException) -> None:
        self.rejected += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("MongoDB rejected a tracking write (%s op): %s", op.get("op"), self.last_error)
        path = self.spool.dir / f"rejected-{os.getpid()}.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(encode({"error": self.last_error, "record": op}) + "\n")
        except OSError as write_exc:
            log.error("could not record the rejected write in %s: %s", path, write_exc)
