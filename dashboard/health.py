"""Data of the Services page: Redis and MongoDB health, key counts, spooled tracking writes.

Addresses are shown with the password masked. Key counts come from SCAN (never KEYS, which
blocks the server), grouped by the project's prefixes and capped at :data:`MAX_SCANNED_KEYS`.
Nothing here writes: the spool files are read without taking their lock (taking it would make a
tracker that starts spooling at that moment fail to lock its own file).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pymongo
from pymongo import MongoClient

from dashboard import sources

#: Keys counted by SCAN at most (the count is then a lower bound, and says so).
MAX_SCANNED_KEYS = 200_000
#: Key prefixes of the project, most specific first; other keys are Feast's online rows
#: (binary entity keys) or someone else's.
KEY_PREFIXES = (
    ("training:", "live training state and channels (training:<id>:state)"),
    ("eegfs:feast:", "online-store materialization marker"),
    ("eegfs:", "other eegfs keys"),
)


def redis_health(redis, url: str) -> dict[str, Any]:
    """Redis: masked address, answering, version, memory, uptime and key counts by prefix.

    Returns
    -------
    dict
        ``address``, ``answering``, ``error`` (when not answering), ``version``,
        ``used_memory``, ``used_memory_peak``, ``uptime_s``, ``keys`` (DataFrame: prefix,
        meaning, keys), ``scanned`` (keys looked at) and ``complete`` (False when the scan
        stopped at the cap).
    """
    out: dict[str, Any] = {"address": sources.mask_uri(url), "answering": False, "error": None}
    try:
        info = redis.info()
        counts, scanned, complete = _count_keys(redis)
    except Exception as exc:  # noqa: BLE001 - any Redis failure means "not answering"
        out["error"] = f"{type(exc).__name__}: {sources.mask_uri(str(exc))}"
        return out
    out.update(
        answering=True,
        version=info.get("redis_version"),
        used_memory=info.get("used_memory_human"),
        used_memory_peak=info.get("used_memory_peak_human"),
        uptime_s=info.get("uptime_in_seconds"),
        keys=pd.DataFrame(
            [
                {"prefix": prefix, "meaning": meaning, "keys": counts.get(prefix, 0)}
                for prefix, meaning in [*KEY_PREFIXES, ("(other)", "Feast online rows, other")]
            ]
        ),
        scanned=scanned,
        complete=complete,
    )
    return out


def _count_keys(redis) -> tuple[Counter, int, bool]:
    counts: Counter = Counter()
    scanned = 0
    for key in redis.scan_iter(count=1000):
        scanned += 1
        counts[_prefix_of(key)] += 1
        if scanned >= MAX_SCANNED_KEYS:
            return counts, scanned, False
    return counts, scanned, True


def _prefix_of(key: bytes | str) -> str:
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    for prefix, _ in KEY_PREFIXES:
        if text.startswith(prefix):
            return prefix
    return "(other)"


def mongo_health(client: MongoClient, uri: str, db_name: str) -> dict[str, Any]:
    """MongoDB: masked address, answering, version, memory and the tracking collections' sizes.

    Returns
    -------
    dict
        ``address``, ``database``, ``answering``, ``error``, ``version``, ``resident_mb``
        (None where the server does not report it or the user may not ask), ``replica_set``,
        ``collections`` (DataFrame: collection, documents (estimated)).
    """
    out: dict[str, Any] = {
        "address": sources.mask_uri(uri),
        "database": db_name,
        "answering": False,
        "error": None,
    }
    try:
        with pymongo.timeout(3):
            client.admin.command("ping")
            build = client.admin.command("buildInfo")
            hello = client.admin.command("hello")
    except pymongo.errors.PyMongoError as exc:
        out["error"] = f"{type(exc).__name__}: {sources.mask_uri(str(exc))}"
        return out
    out.update(
        answering=True,
        version=build.get("version"),
        replica_set=hello.get("setName"),
        resident_mb=_resident_mb(client),
        collections=_collection_sizes(client[db_name]),
    )
    return out


def _resident_mb(client: MongoClient) -> float | None:
    try:
        with pymongo.timeout(3):
            status = client.admin.command("serverStatus")
    except pymongo.errors.PyMongoError:
        return None  # not allowed for this user, or not reported by this server
    mem = status.get("mem") or {}
    value = mem.get("resident")
    return float(value) if isinstance(value, int | float) else None


TRACKING_COLLECTIONS = (
    "EXPERIMENTS",
    "EPOCHS",
    "METRICS",
    "CHECKPOINTS",
    "MODELS",
    "MODEL_VERSIONS",
    "DATASETS",
)


def _collection_sizes(db) -> pd.DataFrame:
    rows = []
    for attr in TRACKING_COLLECTIONS:
        name = getattr(sources, attr)
        with pymongo.timeout(3):
            rows.append({"collection": name, "documents": db[name].estimated_document_count()})
    return pd.DataFrame(rows, columns=["collection", "documents"])


def spool_frame(data_dir: Path) -> pd.DataFrame:
    """Spool files of tracking writes not yet in MongoDB, with their writer and whether it runs.

    Columns: ``file``, ``records`` (complete lines), ``bytes``, ``modified``, ``writer``
    (host-pid from the file name), ``writer_running`` (True/False on this host, None for
    another host's file). A file whose writer is not running waits for ``eegfs runs sync``.
    """
    spool_dir = sources.default_spool_dir(Path(data_dir))
    columns = ["file", "records", "bytes", "modified", "writer", "writer_running"]
    if not spool_dir.is_dir():
        return pd.DataFrame(columns=columns)
    rows = []
    for path in sorted(spool_dir.glob(sources.SPOOL_GLOB)):
        try:
            stat = path.stat()
            with open(path, "rb") as fh:
                records = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        except FileNotFoundError:
            continue  # replayed and deleted meanwhile
        host, pid = _writer_of(path)
        rows.append(
            {
                "file": path.name,
                "records": records,
                "bytes": stat.st_size,
                "modified": dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC),
                "writer": f"{host} pid {pid}" if pid is not None else host,
                "writer_running": _running(host, pid),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _writer_of(path: Path) -> tuple[str, int | None]:
    # spool-<host>-<pid>-<random>.jsonl (tracking.spool; '-' in host names is written as '_')
    parts = path.stem.split("-")
    if len(parts) >= 4 and parts[-2].isdigit():
        return "-".join(parts[1:-2]), int(parts[-2])
    return "?", None


def _running(host: str, pid: int | None) -> bool | None:
    if pid is None or host != (socket.gethostname().replace("-", "_") or "host"):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
