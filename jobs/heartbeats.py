"""Worker heartbeats in Redis, and the list of live and lost workers.

A live worker refreshes ``P:worker:<name>`` (a hash with host, pid, queue, current job and
attempt, started, last beat) several times per heartbeat interval; the key's TTL is one
interval, so a worker that stops beating disappears within one interval. ``P:workers`` (a
sorted set: name -> last beat) and ``P:workers:info`` (name -> JSON) index every worker seen,
so live and lost workers are listed without KEYS, and a lost worker is one indexed there whose
heartbeat key is gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from jobs.fence import utcnow_text
from jobs.keys import JobKeys

#: How often per interval a worker beats (and looks for lost workers).
BEATS_PER_INTERVAL = 3
#: Lost workers are listed for this long, then forgotten (seconds).
LOST_RETENTION_S = 24 * 3600


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as ``eegfs workers`` shows it."""

    name: str
    state: str  # "live" or "lost"
    host: str | None
    pid: int | None
    queue: str | None
    job: str | None
    attempt: int | None
    started: str | None
    last_beat: str | None
    last_beat_age_s: float | None
    heartbeat_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Heartbeat:
    """The heartbeat of one worker process."""

    def __init__(
        self, client: redis.Redis, keys: JobKeys, *, name: str, queue: str, heartbeat_s: float
    ) -> None:
        self.client = client
        self.keys = keys
        self.name = name
        self.heartbeat_s = float(heartbeat_s)
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": queue,
            "started": utcnow_text(),
            "heartbeat_s": self.heartbeat_s,
        }
        self.job: str = ""
        self.attempt: int = 0

    def beat(self) -> None:
        """Refresh this worker's heartbeat key (TTL one interval) and its index entries."""
        now = time.time()
        key = self.keys.worker(self.name)
        fields = {
            **{k: str(v) for k, v in self.info.items()},
            "job": self.job,
            "attempt": str(self.attempt),
            "last_beat": utcnow_text(),
        }
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, int(self.heartbeat_s * 1000))
            pipe.zadd(self.keys.workers, {self.name: now})
            pipe.hset(self.keys.workers_info, self.name, json.dumps(self.info))
            pipe.execute()

    def stop(self) -> None:
        """Remove this worker from the lists (a clean exit is not a lost worker)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(self.name))
            pipe.zrem(self.keys.workers, self.name)
            pipe.hdel(self.keys.workers_info, self.name)
            pipe.execute()


def lost_workers(client: redis.Redis, keys: JobKeys) -> set[str]:
    """Names of indexed workers whose heartbeat key has expired."""
    names = [n.decode() for n in client.zrange(keys.workers, 0, -1)]
    if not names:
        return set()
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(keys.worker(name))
        alive = pipe.execute()
    return {name for name, is_alive in zip(names, alive, strict=True) if not is_alive}


def forget_old_lost(client: redis.Redis, keys: JobKeys, lost: set[str]) -> None:
    """Drop lost workers whose last beat is older than :data:`LOST_RETENTION_S`."""
    cutoff = time.time() - LOST_RETENTION_S
    old = [n.decode() for n in client.zrangebyscore(keys.workers, "-inf", cutoff)]
    old = [n for n in old if n in lost]
    if old:
        with client.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.workers, *old)
            pipe.hdel(keys.workers_info, *old)
            pipe.execute()


def list_workers(client: redis.Redis, keys: JobKeys) -> list[WorkerInfo]:
    """Every indexed worker, live ones first, each group by name."""
    entries = client.zrange(keys.workers, 0, -1, withscores=True)
    names = [n.decode() for n, _ in entries]
    if not names:
        return []
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.worker(name))
        beats = pipe.execute()
    infos = client.hmget(keys.workers_info, names)
    now = time.time()
    out = []
    for (name, score), beat, info in zip(entries, beats, infos, strict=True):
        fields = {k.decode(): v.decode() for k, v in beat.items()}
        static = json.loads(info) if info else {}
        out.append(
            WorkerInfo(
                name=name.decode(),
                state="live" if fields else "lost",
                host=fields.get("host") or static.get("host"),
                pid=int(fields.get("pid") or static.get("pid") or 0) or None,
                queue=fields.get("queue") or static.get("queue"),
                job=fields.get("job") or None,
                attempt=int(fields["attempt"]) if fields.get("attempt", "0") != "0" else None,
                started=fields.get("started") or static.get("started"),
                last_beat=fields.get("last_beat")
                or time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(score)),
                last_beat_age_s=round(now - score, 3),
                heartbeat_s=float(fields.get("heartbeat_s") or static.get("heartbeat_s") or 0)
                or None,
            )
        )
    return sorted(out, key=lambda w: (w.state != "live", w.name))


__all__ = [
    "BEATS_PER_INTERVAL",
    "Heartbeat",
    "WorkerInfo",
    "forget_old_lost",
    "list_workers",
    "lost_workers",
]
