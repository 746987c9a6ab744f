"""Every use of Feast's private or unstable API, in this one module (Feast 0.67).

The rest of the project reaches Feast through its public API (``FeatureStore``, ``RepoConfig``,
the definition classes, ``feast.types``) and through the functions below. When a Feast upgrade
changes what they rely on, ``tests/features/test_feast_adapter.py`` fails first, and only this
module needs changing. What is relied on:

* Applying a repository: ``feast.repo_operations.extract_objects_for_apply_delete`` and
  ``feast.repo_contents.RepoContents`` (what ``feast apply`` adds and removes).
* The Redis online store of a ``FeatureStore``: ``store.provider.online_store`` is one
  ``RedisOnlineStore`` per store, whose private ``_client`` is the redis-py client every
  synchronous path uses (``update``, ``online_write_batch``, ``online_read``): the project sets
  it to the client built from ``REDIS_URL`` (:func:`attach_redis_client`), so passwords never go
  through Feast's connection string.
* The connection string ``host:port,key=value,...`` as ``RedisOnlineStore``'s private
  ``_parse_connection_string`` reads it (splits on ``,``, JSON-decodes values): only the plain
  ``feast`` CLI still uses one (:func:`parse_connection_string`).
* The Redis layout of an online row: one hash per entity, key = ``serialize_entity_key`` (format
  version ``entity_key_serialization_version``) + project name, one field per feature,
  ``_mmh3("<view>:<feature>")`` (the view name with a version suffix when online versioning is
  on), holding a serialized ``feast.types.Value`` protobuf (:class:`OnlineLayout`).
* The wire encoding of those ``Value`` messages (:func:`decode_rows`): read in bulk with NumPy
  (float, double, int32/64, string, float lists); anything else is parsed by protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain
from operator import length_hint
from typing import Any

import numpy as np
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

# Tags (field number << 3 | wire type) of the ``feast.types.Value`` members read in bulk.
STRING_TAG = 0x12  # string_val = 2, length-delimited
INT32_TAG = 0x18  # int32_val = 3, varint
INT64_TAG = 0x20  # int64_val = 4, varint
DOUBLE_TAG = 0x29  # double_val = 5, fixed64
FLOAT_TAG = 0x35  # float_val = 6, fixed32
FLOAT_LIST_TAG = b"\x82\x01"  # float_list_val = 16, length-delimited (FloatList)
FLOAT_LIST_VALUES_TAG = 0x0A  # FloatList.val = 1, packed fixed32
NUMERIC_KINDS = ("f32", "f64")


# --- apply ----------------------------------------------------------------------------------
def plan_apply(store, project: str, objects) -> tuple[list, list]:
    """``(to_apply, to_delete)``: what ``feast apply`` of ``objects`` changes in the registry.

    ``objects`` has ``sources``, ``entities``, ``feature_views`` and ``feature_services``; what the
    registry holds and ``objects`` lacks is in ``to_delete``.
    """
    from feast.repo_contents import RepoContents
    from feast.repo_operations import extract_objects_for_apply_delete

    repo = RepoContents(
        projects=[],
        data_sources=list(objects.sources),
        entities=list(objects.entities),
        feature_views=list(objects.feature_views),
        feature_services=list(objects.feature_services),
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(project, store.registry, repo)
    return list(to_apply), list(to_delete)


# --- the Redis online store -----------------------------------------------------------------
def attach_redis_client(store, client) -> None:
    """Make ``store``'s Redis online store use ``client`` for every synchronous operation."""
    online = store.provider.online_store
    if not isinstance(online, RedisOnlineStore):
        raise TypeError(f"expected Feast's RedisOnlineStore, the store has {type(online).__name__}")
    online._client = client


def parse_connection_string(value: str) -> tuple[list[dict], dict[str, Any]]:
    """``(nodes, params)`` as Feast's Redis online store reads ``connection_string``."""
    return RedisOnlineStore._parse_connection_string(value)


# --- Redis layout of online rows ------------------------------------------------------------
def _entity_key_encoder(project: str, join_key: str, version: int) -> Callable[[str], bytes]:
    """``subject id -> Redis key`` for a one-string-key entity, equal to Feast's encoding.

    Feast's ``serialize_entity_key`` builds two protobuf messages per id (about 3 us each, so a
    fifth of a cold 64-subject read): the key of one string id is a constant head, the id's
    length and its UTF-8 bytes. The shortcut is checked against Feast's own function on two
    probes; where they differ Feast's function is used.
    """
    tail = project.encode()

    def feast_key(sid: str) -> bytes:
        key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=sid)])
        return serialize_entity_key(key, entity_key_serialization_version=version) + tail

    head = feast_key("")[: -len(tail) - 4]  # without the empty id's length and the project

    def fast_key(sid: str) -> bytes:
        raw = sid.encode()
        return head + struct.pack("<I", len(raw)) + raw + tail

    probes = ("NDARAA000001", "sub-\u00e9\u00e8")
    return fast_key if all(fast_key(p) == feast_key(p) for p in probes) else feast_key


class OnlineLayout:
    """Where the online values of some features live in Redis.

    Parameters
    ----------
    store : feast.FeatureStore
    join_key : str
        The single join key of every view (``subject_id``).
    features : sequence of (FeatureView, str)
        The views and feature names to read, in result order.
    """

    def __init__(self, store, join_key: str, features: Sequence[tuple[Any, str]]):
        config = store.config
        self.fields: list[bytes] = [
            _mmh3(f"{_versioned_fv_name(view, config)}:{name}") for view, name in features
        ]
        self._key = _entity_key_encoder(
            config.project, join_key, config.entity_key_serialization_version
        )

    def keys(self, subject_ids: Sequence[str]) -> list[bytes]:
        """The Redis hash key of each subject id."""
        return [self._key(s) for s in subject_ids]


# --- Value decoding -------------------------------------------------------------------------
def _one_value(raw: bytes, kind: str):
    """One serialized ``Value`` as the client's value (NaN when unset): protobuf parsing."""
    value = Value.FromString(raw)
    field = value.WhichOneof("val")
    if field is None or field == "null_val":
        return np.nan
    if kind == "list":
        return np.asarray(getattr(value, field).val, dtype=np.float32)
    if kind in NUMERIC_KINDS:
        return float(getattr(value, field))
    return getattr(value, field)


def _packed(flat: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All values in one byte array: ``(bytes, start offsets, lengths)`` (None counts as empty).

    C-level iteration only: ``length_hint`` gives 0 for None, ``filter`` drops None and empties.
    """
    lengths = np.fromiter(map(length_hint, flat), np.int64, count=len(flat))
    starts = np.zeros(len(flat), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    data = np.frombuffer(b"".join(filter(None, flat)), np.uint8)
    return data, starts, lengths


def _gather(data: np.ndarray, starts: np.ndarray, offset: int, width: int) -> np.ndarray:
    """``(len(starts), width)`` bytes from each start + offset (a new contiguous array)."""
    return data[starts[:, None] + np.arange(offset, offset + width)]


def _varints(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple:
    """``(values as int64, valid)`` of the varints of ``sizes`` bytes at ``starts``."""
    cols = np.arange(int(sizes.max(initial=1)))
    inside = cols < sizes[:, None]
    index = np.where(inside, starts[:, None] + cols, 0)
    raw = np.where(inside, data[index], 0).astype(np.uint64)
    continued = (raw & np.uint64(0x80)) != 0
    valid = np.all(~inside | (continued == (cols < sizes[:, None] - 1)), axis=1)
    shifted = (raw & np.uint64(0x7F)) << (np.uint64(7) * cols.astype(np.uint64))
    return np.bitwise_or.reduce(shifted, axis=1).view(np.int64), valid


class _Packed:
    """Serialized values of a table, flattened row by row, with their tags and sizes."""

    def __init__(self, flat: Sequence[bytes | None]) -> None:
        self.flat = flat
        self.data, self.starts, self.lengths = _packed(flat)
        self.tags = np.zeros(len(flat), np.int64)
        present = self.lengths > 0
        self.tags[present] = self.data[self.starts[present]]
        self.done = ~present

    def pending(self, where: np.ndarray) -> np.ndarray:
        """Indices in ``where`` (a mask) not decoded yet."""
        return np.flatnonzero(where & ~self.done)


def _fill_numbers(p: _Packed, rows: np.ndarray, out: np.ndarray) -> None:
    """float / double / int32 / int64 values among ``rows`` into ``out`` (float64)."""
    tags, lengths = p.tags[rows], p.lengths[rows]
    for tag, size, dtype in ((FLOAT_TAG, 4, "<f4"), (DOUBLE_TAG, 8, "<f8")):
        hit = rows[(tags == tag) & (lengths == size + 1)]
        out[hit] = _gather(p.data, p.starts[hit], 1, size).view(dtype)[:, 0]
        p.done[hit] = True
    hit = rows[((tags == INT64_TAG) | (tags == INT32_TAG)) & (lengths >= 2) & (lengths <= 11)]
    if len(hit):
        values, valid = _varints(p.data, p.starts[hit] + 1, p.lengths[hit] - 1)
        out[hit[valid]] = values[valid]
        p.done[hit[valid]] = True


def _float_list_head(size: int) -> bytes | None:
    """The bytes before the floats of a ``float_list_val`` Value of ``size`` bytes, or None."""
    for head_size in range(5, 14):
        n_bytes = size - head_size
        if n_bytes < 0 or n_bytes % 4:
            continue
        inner = bytes([FLOAT_LIST_VALUES_TAG]) + _varint(n_bytes)
        head = FLOAT_LIST_TAG + _varint(len(inner) + n_bytes) + inner
        if len(head) == head_size:
            return head
    return None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fill_float_lists(p: _Packed, rows: np.ndarray, out: np.ndarray) -> None:
    """``float_list_val`` values among ``rows`` into ``out`` (objects) as float32 arrays."""
    for size in np.unique(p.lengths[rows]):  # one size (the channel count) normally
        head = _float_list_head(int(size))
        if head is None:
            continue
        hit = rows[p.lengths[rows] == size]
        values = np.frombuffer(b"".join(map(p.flat.__getitem__, hit)), np.uint8)
        values = values.reshape(len(hit), int(size))
        matches = (values[:, : len(head)] == np.frombuffer(head, np.uint8)).all(axis=1)
        hit = hit[matches]
        floats = np.ascontiguousarray(values[matches, len(head) :])
        matrix = floats.view("<f4").astype(np.float32, copy=False)
        # one float32 row view per value; the None makes NumPy keep a 1-D array of arrays
        out[hit] = np.array([*matrix, None], dtype=object)[:-1]
        p.done[hit] = True


def _fill_strings(p: _Packed, rows: np.ndarray, out: np.ndarray) -> None:
    """Short ``string_val`` values (tag, one-byte length, UTF-8) among ``rows`` into ``out``."""
    second = np.zeros(len(rows), np.int64)
    long_enough = p.lengths[rows] >= 2
    second[long_enough] = p.data[p.starts[rows[long_enough]] + 1]
    short = (second < 0x80) & (second == p.lengths[rows] - 2)
    hit = rows[(p.tags[rows] == STRING_TAG) & short]
    for i in hit:  # the str objects are the result: one per value
        out[i] = p.flat[i][2:].decode()
    p.done[hit] = True


def decode_rows(
    rows: Sequence[Sequence[bytes | None]], kinds: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Serialized ``feast.types.Value`` messages (None: missing), one row per entity and one
    column per feature of kind ``kinds[j]``, decoded in bulk.

    Returns ``(numbers, objects)``, both (n, k): ``numbers`` (float64) holds the columns of kind
    ``f32`` / ``f64``, ``objects`` the others (float32 arrays for ``list``, strings for ``str``);
    the other block's cells and every missing or null value are NaN. Equal to parsing each
    message with protobuf (``Value.FromString``) and taking its one set member.
    """
    n, k = len(rows), len(kinds)
    p = _Packed(list(chain.from_iterable(rows)))
    if len(p.flat) != n * k:
        raise ValueError(f"expected {n} rows of {k} values, got {len(p.flat)} values")
    numbers = np.full(n * k, np.nan)
    objects = np.full(n * k, np.nan, dtype=object)
    column = np.tile(np.arange(k), n)  # the column of each flat value
    is_numeric = np.array([kind in NUMERIC_KINDS for kind in kinds])[column]
    _fill_numbers(p, p.pending(is_numeric), numbers)
    _fill_float_lists(p, p.pending(np.array([kind == "list" for kind in kinds])[column]), objects)
    _fill_strings(p, p.pending(np.array([kind == "str" for kind in kinds])[column]), objects)
    for i in np.flatnonzero(~p.done):  # null_val, bool, empty lists, ...: rare
        target = numbers if is_numeric[i] else objects
        target[i] = _one_value(p.flat[i], kinds[column[i]])
    return numbers.reshape(n, k), objects.reshape(n, k)


__all__ = [
    "OnlineLayout",
    "attach_redis_client",
    "decode_rows",
    "parse_connection_string",
    "plan_apply",
]
