"""``eegfs backup DIR`` / ``eegfs restore DIR``: a portable copy of the tracking database.

No mongodump needed: documents are written with pymongo as canonical MongoDB Extended JSON
(types survive exactly: ObjectId, dates, int32/int64/double, NaN, binary) and GridFS files as
plain files. Layout::

    DIR/manifest.json                          format, database, counts, sha256 of every file,
                                               index definitions, GridFS file list
    DIR/collections/<name>.jsonl.gz            one document per line
    DIR/gridfs/<bucket>/<file id>.bin          each GridFS file's bytes (checkpoints)

``<bucket>.chunks`` collections are not copied as documents: the chunks are rebuilt from the
``.bin`` files on restore. The backup is assembled in a temporary sibling directory and renamed
into place, so DIR is either complete or absent. A restore first verifies every checksum, then
upserts each document by ``_id`` (rerunning it changes nothing), recreates the indexes and
rewrites the GridFS chunks. Writes made while a backup runs may or may not be included: take it
when no run is writing, or accept a copy that is consistent per document.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gridfs
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions
from pymongo import IndexModel, ReplaceOne
from pymongo.database import Database

from services.files import (
    CHUNK,
    atomic_write_chunks,
    atomic_write_text,
    fsync_dir,
    fsync_file,
    sha256_file,
)
from tracking.errors import BackupError
from tracking.timeutil import utcnow

FORMAT = "eegfs-tracking-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BATCH = 500
_LOAD = JSONOptions(json_mode=CANONICAL_JSON_OPTIONS.json_mode, tz_aware=True)
_INDEX_OPTIONS = (
    "unique",
    "sparse",
    "partialFilterExpression",
    "expireAfterSeconds",
    "collation",
    "weights",
    "default_language",
    "wildcardProjection",
)


@dataclass
class BackupReport:
    directory: Path
    collections: dict[str, int] = field(default_factory=dict)
    gridfs_files: int = 0
    gridfs_bytes: int = 0


@dataclass
class RestoreReport:
    directory: Path
    database: str
    collections: dict[str, int] = field(default_factory=dict)
    gridfs_files: int = 0


def _buckets(names: list[str]) -> list[str]:
    return sorted(
        n[: -len(".files")]
        for n in names
        if n.endswith(".files") and n[: -len(".files")] + ".chunks" in names
    )


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)


def backup_database(db: Database, directory: Path, *, progress: bool = False) -> BackupReport:
    """Write every collection and GridFS file of ``db`` to ``directory`` (which must not exist yet,
    or be empty).

    Raises
    ------
    BackupError
        When ``directory`` exists and is not empty.
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupError(f"{directory} already exists and is not empty; choose a new directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent)
    )
    try:
        report = _write_backup(db, tmp, progress)
        # Every file was fsynced as it was written; make the folders' entries durable too, so
        # the rename below never exposes a backup whose files are still only in the page cache.
        for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
            fsync_dir(folder)
        fsync_dir(tmp)
        if directory.exists():
            directory.rmdir()
        os.replace(tmp, directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.directory = directory
    return report


def _write_backup(db: Database, root: Path, progress: bool) -> BackupReport:
    names = sorted(n for n in db.list_collection_names() if not n.startswith("system."))
    buckets = _buckets(names)
    skip = {f"{b}.chunks" for b in buckets}
    report = BackupReport(root)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "database": db.name,
        "created_at": utcnow().isoformat(),
        "collections": {},
        "gridfs": {},
    }
    (root / "collections").mkdir()
    for name in _progress(
        [n for n in names if n not in skip], progress, desc="collections", unit="coll"
    ):
        path = root / "collections" / f"{name}.jsonl.gz"
        count = 0
        with gzip.open(path, "wt", encoding="utf-8") as out:
            for doc in db[name].find({}, sort=[("_id", 1)]):
                out.write(json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS) + "\n")
                count += 1
        fsync_file(path)
        indexes = []
        for spec in db[name].list_indexes():
            if spec["name"] == "_id_":
                continue
            entry = {"name": spec["name"], "key": list(spec["key"].items())}
            entry.update({k: spec[k] for k in _INDEX_OPTIONS if k in spec})
            indexes.append(entry)
        manifest["collections"][name] = {
            "file": f"collections/{name}.jsonl.gz",
            "count": count,
            "sha256": sha256_file(path),
            "indexes": json.loads(json_util.dumps(indexes, json_options=CANONICAL_JSON_OPTIONS)),
        }
        report.collections[name] = count
    for bucket in buckets:
        fs = gridfs.GridFSBucket(db, bucket_name=bucket)
        folder = root / "gridfs" / bucket
        folder.mkdir(parents=True)
        files = []
        docs = list(db[f"{bucket}.files"].find({}, {"_id": 1}, sort=[("_id", 1)]))
        for doc in _progress(docs, progress, desc=f"GridFS {bucket}", unit="file"):
            file_id = doc["_id"]
            name = hashlib.sha1(json_util.dumps(file_id).encode()).hexdigest() + ".bin"
            with fs.open_download_stream(file_id) as src:
                # hashed while copied, fsynced, renamed into place
                sha256 = atomic_write_chunks(
                    folder / name, iter(lambda src=src: src.read(CHUNK), b"")
                )
            size = (folder / name).stat().st_size
            files.append(
                {
                    "id": json.loads(json_util.dumps(file_id, json_options=CANONICAL_JSON_OPTIONS)),
                    "file": f"gridfs/{bucket}/{name}",
                    "length": size,
                    "sha256": sha256,
                }
            )
            report.gridfs_files += 1
            report.gridfs_bytes += size
        manifest["gridfs"][bucket] = files
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    return report


def _load_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BackupError(
            f"{directory}: no {MANIFEST}; not a backup written by `eegfs backup`"
        ) from exc
    except json.JSONDecodeError as exc:
        raise BackupError(f"{path}: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BackupError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"this eegfs reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return manifest


def verify_backup(directory: Path) -> dict[str, Any]:
    """Check every file of a backup against its manifest checksum; returns the manifest."""
    directory = Path(directory)
    manifest = _load_manifest(directory)
    entries = [(c["file"], c["sha256"]) for c in manifest["collections"].values()]
    entries += [(f["file"], f["sha256"]) for files in manifest["gridfs"].values() for f in files]
    for rel, expected in entries:
        path = directory / rel
        if not path.is_file():
            raise BackupError(f"{path}: missing from the backup (listed in {MANIFEST})")
        actual = sha256_file(path)
        if actual != expected:
            raise BackupError(
                f"{path}: sha256 {actual} but the manifest says {expected}; the backup is damaged"
            )
    return manifest


def restore_database(
    db: Database, directory: Path, *, drop: bool = False, progress: bool = False
) -> RestoreReport:
    """Restore a backup into ``db`` (verified first; documents upserted by ``_id``).

    Parameters
    ----------
    drop:
        Drop each collection of the backup before restoring it (an exact copy); without it,
        documents are upserted and anything else in the database is kept.
    """
    directory = Path(directory)
    manifest = verify_backup(directory)
    report = RestoreReport(directory, db.name)
    for name, entry in _progress(
        manifest["collections"].items(), progress, desc="collections", unit="coll"
    ):
        if drop:
            db.drop_collection(name)
        report.collections[name] = _restore_documents(db[name], directory / entry["file"])
        _restore_indexes(db[name], entry["indexes"])
    for bucket in sorted(manifest["gridfs"]):
        report.gridfs_files += _restore_bucket(
            db, directory, bucket, manifest["gridfs"][bucket], drop=drop, progress=progress
        )
    return report


def _restore_documents(collection, path: Path) -> int:
    """Upsert every document of a gzipped canonical-JSON-lines file by ``_id``; returns the count."""
    count = 0
    batch: list[ReplaceOne] = []
    with gzip.open(path, "rt", encoding="utf-8") as src:
        for line in src:
            doc = json_util.loads(line, json_options=_LOAD)
            batch.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
            count += 1
            if len(batch) >= BATCH:
                collection.bulk_write(batch, ordered=False)
                batch = []
    if batch:
        collection.bulk_write(batch, ordered=False)
    return count


def _restore_indexes(collection, specs: list[dict[str, Any]]) -> None:
    indexes = json_util.loads(json.dumps(specs), json_options=_LOAD)
    if indexes:
        collection.create_indexes(
            [
                IndexModel(
                    [tuple(k) for k in spec["key"]],
                    name=spec["name"],
                    **{k: spec[k] for k in _INDEX_OPTIONS if k in spec},
                )
                for spec in indexes
            ]
        )


def _restore_bucket(
    db: Database,
    directory: Path,
    bucket: str,
    entries: list[dict[str, Any]],
    *,
    drop: bool,
    progress: bool,
) -> int:
    """Restore the chunks of one GridFS bucket (its files documents are restored already)."""
    chunks = db[f"{bucket}.chunks"]
    if drop:
        chunks.drop()
    chunks.create_index([("files_id", 1), ("n", 1)], unique=True)
    for entry in _progress(entries, progress, desc=f"GridFS {bucket}", unit="file"):
        file_id = json_util.loads(json.dumps(entry["id"]), json_options=_LOAD)
        files_doc = db[f"{bucket}.files"].find_one({"_id": file_id})
        if files_doc is None:
            raise BackupError(
                f"{directory}: GridFS file {file_id} has no document in {bucket}.files"
            )
        _write_chunks(chunks, file_id, directory / entry["file"], int(files_doc["chunkSize"]))
    return len(entries)


def _write_chunks(chunks, file_id: Any, path: Path, chunk_size: int) -> None:
    # Written by hand (the GridFS spec: {files_id, n, data}) because GridFSBucket can only upload
    # a new files document, and the restored one must keep its uploadDate and metadata.
    chunks.delete_many({"files_id": file_id})
    batch = []
    with open(path, "rb") as src:
        for n, data in enumerate(iter(lambda: src.read(chunk_size), b"")):
            batch.append({"files_id": file_id, "n": n, "data": data})
            if len(batch) >= 16:
                chunks.insert_many(batch)
                batch = []
    if batch:
        chunks.insert_many(batch)


__all__ = ["BackupReport", "RestoreReport", "backup_database", "restore_database", "verify_backup"]
