"""Online reads from Redis, with an in-process cache dropped on every new materialization.

A read of ``n`` subjects is one round trip: Feast keeps all views of an entity in one hash, so
the client sends one ``HMGET`` per subject of every feature of the service (keys and field names
from :class:`featurestore.feast_adapter.OnlineLayout`) plus the ``GET`` of the materialization
marker, all inside one server-side script (:data:`READ_SCRIPT`), or one pipeline where the
server or the user refuses scripts. Values are decoded in bulk
(:func:`featurestore.feast_adapter.decode_rows`) into two blocks: numbers (float64) and objects
(strings, float32 arrays). The result equals ``FeatureStore.get_online_features`` with the
client's value conventions (NaN for missing; a test compares them).

With the cache on, the marker is read first (one small ``GET``), hits are served from memory and
only the misses go to Redis. With it off, the marker comes with the values; when it changed, the
client drops what it derived from the registry and reads again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from featurestore.catalog import ServiceInfo
from featurestore.connection import redis_failure
from featurestore.errors import FeatureStoreError
from featurestore.feast_adapter import decode_rows
from featurestore.marker import marker_key, parse_marker, read_marker_raw
from featurestore.values import numpy_dtype

log = logging.getLogger(__name__)
_UNSEEN = object()
#: The whole read as one server-side script: the marker, then ``HMGET`` of the same fields in
#: every hash. One command to pack and one reply to parse, where a pipeline has one per subject
#: (redis-py spends about 10 us on each). Servers or users that refuse scripts get the pipeline.
READ_SCRIPT = """
local out = {redis.call('GET', KEYS[1])}
for i = 2, #KEYS do
  out[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
end
return out
"""
#: Lua's unpack() takes at most about 8,000 values.
MAX_SCRIPT_FIELDS = 4000


def _scripting_refused(exc: redis.ResponseError) -> bool:
    """True for "no permission" (ACL) and "unknown command" (no scripting) replies."""
    text = str(exc)
    return isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith(
        ("NOPERM", "unknown command", "ERR unknown command")
    )


_READ_HINT = "Check that `eegfs features apply` and `eegfs features materialize` ran"


@dataclass(frozen=True)
class OnlineBlock:
    """Online values of ``n`` subjects: ``numeric`` (n, numbers) float64, ``objects`` (n, others)."""

    numeric: np.ndarray
    objects: np.ndarray

    def __len__(self) -> int:
        return len(self.numeric)

    def take(self, index: Sequence[int]) -> OnlineBlock:
        """The rows ``index`` (repeats allowed)."""
        return OnlineBlock(self.numeric[index], self.objects[index])

    def column(self, info: ServiceInfo, j: int) -> np.ndarray:
        """Values of feature ``j`` of ``info``: float32/float64 for numbers, else objects."""
        numeric, col = info.slots[j]
        if numeric:
            return self.numeric[:, col].astype(numpy_dtype(info.kinds[j]))
        return self.objects[:, col]


def empty_block(info: ServiceInfo, n: int = 0) -> OnlineBlock:
    n_objects = len(info.features) - info.n_numeric
    return OnlineBlock(
        np.full((n, info.n_numeric), np.nan), np.full((n, n_objects), np.nan, dtype=object)
    )


def decode_block(info: ServiceInfo, replies: Sequence[Sequence[bytes | None]]) -> OnlineBlock:
    """The block of ``HMGET`` replies (one list of raw values per subject, fields in order)."""
    if not replies:
        return empty_block(info)
    numbers, objects = decode_rows(replies, info.kinds)
    numeric = np.array([is_numeric for is_numeric, _ in info.slots], dtype=bool)
    return OnlineBlock(numbers[:, numeric], objects[:, ~numeric])


def _own_row(block: OnlineBlock, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i`` as copies that keep nothing else alive (arrays in it are copied too)."""
    objects = block.objects[i].copy()
    for k, v in enumerate(objects):
        if isinstance(v, np.ndarray):
            objects[k] = v.copy()
    return block.numeric[i].copy(), objects


class OnlineReader:
    """Reads online rows through one Redis client, with an LRU cache of ``cache_size`` rows.

    Parameters
    ----------
    redis_client : redis.Redis
    url : str
        ``REDIS_URL`` (for messages; masked there).
    project : str
        Feast project (names the marker key).
    cache_size : int
        (service, subject) rows kept; 0 disables the cache.
    on_new_materialization : callable
        Called when a new marker is seen (after the first), before anything is read again: the
        client drops what it derived from the registry.
    """

    def __init__(
        self,
        redis_client,
        url: str,
        project: str,
        cache_size: int,
        on_new_materialization: Callable[[], None],
    ) -> None:
        self.redis = redis_client
        self.url = url
        self.project = project
        self.cache_size = cache_size
        self._on_new = on_new_materialization
        self._cache: OrderedDict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.RLock()
        self._marker_raw: object = _UNSEEN
        self._script = redis_client.register_script(READ_SCRIPT)
        self.hits = 0
        self.misses = 0

    # --- marker -------------------------------------------------------------------------------
    def observe_marker(self, raw: bytes | None) -> bool:
        """Record the marker value; on a change after the first, drop the cache and tell the
        client. True when something was dropped."""
        with self._lock:
            if raw == self._marker_raw:
                return False
            first = self._marker_raw is _UNSEEN
            self._marker_raw = raw
            self._cache.clear()
        if not first:
            self._on_new()
        return not first

    def sync_marker(self) -> None:
        """Read the marker now (a new materialization drops the cache)."""
        self.observe_marker(read_marker_raw(self.redis, self.project, self.url))

    def served_marker(self) -> dict | None:
        """The marker the cache is valid for (None before the first read)."""
        raw = self._marker_raw
        return None if raw is _UNSEEN else parse_marker(raw)

    # --- reads --------------------------------------------------------------------------------
    def read(
        self, subject_ids: list[str], info_of: Callable[[], ServiceInfo]
    ) -> tuple[ServiceInfo, OnlineBlock]:
        """``(info, block)`` of normalised ``subject_ids`` (in order, repeats allowed).

        ``info_of()`` gives the service's :class:`ServiceInfo`; it is asked again after a new
        materialization dropped the client's copy.
        """
        unique = list(dict.fromkeys(subject_ids))
        if self.cache_size:
            info, block = self._read_cached(unique, info_of)
        else:
            info, block = self._read_cold(unique, info_of)
        if len(unique) != len(subject_ids):
            where = {s: i for i, s in enumerate(unique)}
            block = block.take([where[s] for s in subject_ids])
        return info, block

    def _read_cold(self, ids: list[str], info_of) -> tuple[ServiceInfo, OnlineBlock]:
        info = info_of()
        marker, block = self._fetch(info, ids)
        if self.observe_marker(marker):  # the registry may have changed too: read again
            info = info_of()
            _, block = self._fetch(info, ids)
        with self._lock:
            self.misses += len(ids)
        return info, block

    def _read_cached(self, ids: list[str], info_of) -> tuple[ServiceInfo, OnlineBlock]:
        self.sync_marker()
        info = info_of()
        rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with self._lock:
            for sid in ids:
                row = self._cache.get((info.name, sid))
                if row is not None:
                    self._cache.move_to_end((info.name, sid))
                    rows[sid] = row
            self.hits += len(rows)
            self.misses += len(ids) - len(rows)
        wanted = [s for s in ids if s not in rows]
        if wanted:
            _, fetched = self._fetch(info, wanted)
            self._remember(info.name, wanted, fetched, rows)
        if not ids:
            return info, empty_block(info)
        numeric = np.stack([rows[s][0] for s in ids])
        objects = np.stack([rows[s][1] for s in ids])
        return info, OnlineBlock(numeric, objects)

    def _remember(self, service: str, ids: list[str], block: OnlineBlock, rows: dict) -> None:
        with self._lock:
            for i, sid in enumerate(ids):
                rows[sid] = _own_row(block, i)
                self._cache[(service, sid)] = rows[sid]
                self._cache.move_to_end((service, sid))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _fetch(self, info: ServiceInfo, ids: list[str]) -> tuple[bytes | None, OnlineBlock]:
        """One round trip: ``(marker, block of ids)``."""
        doing = f"online read of {info.name!r} for {len(ids)} subject(s)"
        try:
            marker, replies = self._round_trip(info.layout.keys(ids), info.layout.fields)
        except Exception as exc:
            raise redis_failure(exc, self.url, doing, hint=_READ_HINT) from exc
        try:
            return marker, decode_block(info, replies)
        except Exception as exc:
            raise FeatureStoreError(
                f"{doing}: a stored value could not be decoded ({exc!r}); rerun "
                "`eegfs features materialize` with the Feast version of this client"
            ) from exc

    def _round_trip(self, keys: list[bytes], fields: list[bytes]) -> tuple[bytes | None, list]:
        """``(marker, one list of raw values per key)`` in one round trip."""
        marker = marker_key(self.project)
        if self._script is not None and 0 < len(fields) <= MAX_SCRIPT_FIELDS:
            try:
                reply = self._script(keys=[marker, *keys], args=fields)
                return reply[0], reply[1:]
            except redis.ResponseError as exc:
                if not _scripting_refused(exc):
                    raise
                log.info("Redis refuses scripts (%s): online reads use a pipeline", exc)
                self._script = None
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(marker)
        for key in keys if fields else ():
            pipe.hmget(key, fields)
        reply = pipe.execute()
        return reply[0], (reply[1:] if fields else [[] for _ in keys])

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def cache_info(self) -> dict:
        """Hits, misses, size, max size and the materialization the cache is valid for."""
        marker = self.served_marker()
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": len(self._cache),
            "max_size": self.cache_size,
            "materialization": None if marker is None else marker.get("store_snapshot_id"),
        }


__all__ = ["OnlineBlock", "OnlineReader", "decode_block", "empty_block"]
