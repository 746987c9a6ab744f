"""Live training metrics on Redis, which never stop or stall training.

Every update is a JSON object published on the channel ``training:<experiment_id>`` and merged
into the hash ``training:<experiment_id>:state`` (so a viewer that arrives late reads the latest
state first, then subscribes). The training loop only puts messages on a bounded in-process queue
(``put_nowait``: when the queue is full the message is dropped and counted); one background
thread sends them with short socket timeouts. When Redis is down or hangs, the thread backs off
(dropping what arrives meanwhile) and retries later; training does not wait for it.

Message fields: ``type`` (``start``, ``step``, ``epoch``, ``end``), ``experiment_id``, ``time``
(ISO 8601 UTC), ``epoch``, ``step`` and the metrics of that update (floats; NaN becomes null).
The state hash holds ``experiment_id``, ``status``, ``epoch``, ``step``, ``updated``, ``last``
(the last message, JSON) and ``last_epoch`` (the last epoch message, JSON). It expires
``STATE_TTL_S`` after the last update.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "training:"
#: Live state outlives the run by a week, then Redis forgets it (MongoDB keeps the record).
STATE_TTL_S = 7 * 24 * 3600
DEFAULT_TIMEOUT_S = 0.5
DEFAULT_QUEUE_SIZE = 1024
#: After a failed send, messages arriving within this many seconds are dropped, not retried.
DEFAULT_BACKOFF_S = 2.0


def channel_name(experiment_id: str) -> str:
    """Pub/sub channel of an experiment's live updates."""
    return f"{CHANNEL_PREFIX}{experiment_id}"


def state_key(experiment_id: str) -> str:
    """Hash holding an experiment's latest live state."""
    return f"{CHANNEL_PREFIX}{experiment_id}:state"


def _clean(value):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LivePublisher:
    """Background publisher of live metrics for one experiment.

    Parameters
    ----------
    redis_url : str
        Redis URL (``Settings.redis_url``). ``None`` disables publishing (messages are counted
        as dropped).
    experiment_id : str
    timeout_s : float
        Socket connect/read timeout of the publisher's Redis client.
    queue_size : int
        Messages buffered before new ones are dropped.
    backoff_s : float
        Pause after a failed send (messages arriving meanwhile are dropped).

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        redis_url: str | None,
        experiment_id: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        backoff_s: float = DEFAULT_BACKOFF_S,
    ) -> None:
        self.redis_url = redis_url
        self.experiment_id = str(experiment_id)
        self.channel = channel_name(self.experiment_id)
        self.state_key = state_key(self.experiment_id)
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._client = None
        self._retry_at = 0.0
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> LivePublisher:
        if self._thread is None and self.redis_url:
            self._thread = threading.Thread(
                target=self._run, name=f"live-{self.experiment_id}", daemon=True
            )
            self._thread.start()
        return self

    def __enter__(self) -> LivePublisher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued for at most ``timeout_s`` seconds, then stop the thread."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout_s)
            self._thread = None
        # Whatever could not be sent in time is dropped (counted).
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._count_drop()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection must not raise
                client.close()

    # -- producer side (training thread) ------------------------------------------------------
    def publish(
        self,
        kind: str,
        *,
        epoch: int | None = None,
        step: int | None = None,
        status: str | None = None,
        **metrics,
    ) -> bool:
        """Queue one update; never blocks. Returns False when it was dropped."""
        message = {
            "type": kind,
            "experiment_id": self.experiment_id,
            "time": datetime.now(UTC).isoformat(),
            "epoch": epoch,
            "step": step,
        }
        if status is not None:
            message["status"] = status
        message.update(metrics)
        if self._thread is None:
            self._count_drop()
            return False
        try:
            self._queue.put_nowait(_clean(message))
        except queue.Full:
            self._count_drop()
            return False
        return True

    def stats(self) -> dict:
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def _count_drop(self) -> None:
        with self._lock:
            self.dropped += 1

    # -- consumer side (background thread) ----------------------------------------------------
    def _redis(self):
        if self._client is None:
            from services.connections import redis_client

            self._client = redis_client(self.redis_url, timeout_s=self.timeout_s)
        return self._client

    def _send(self, message: dict) -> None:
        payload = json.dumps(message, separators=(",", ":"))
        fields = {
            "experiment_id": self.experiment_id,
            "updated": message["time"],
            "last": payload,
        }
        if message.get("epoch") is not None:
            fields["epoch"] = str(message["epoch"])
        if message.get("step") is not None:
            fields["step"] = str(message["step"])
        if message.get("status") is not None:
            fields["status"] = str(message["status"])
        if message["type"] == "epoch":
            fields["last_epoch"] = payload
        pipe = self._redis().pipeline(transaction=False)
        pipe.publish(self.channel, payload)
        pipe.hset(self.state_key, mapping=fields)
        pipe.expire(self.state_key, STATE_TTL_S)
        pipe.execute()

    def _run(self) -> None:
        while True:
            try:
                message = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if time.monotonic() < self._retry_at:
                self._count_drop()
                continue
            try:
                self._send(message)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - any Redis failure is logged, never raised
                self.errors += 1
                self._count_drop()
                if self.last_error is None or self.errors % 50 == 1:
                    logger.warning("live metrics to Redis failed (%s); training goes on", exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._retry_at = time.monotonic() + self.backoff_s
                client, self._client = self._client, None
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()


__all__ = ["CHANNEL_PREFIX", "LivePublisher", "channel_name", "state_key"]
