"""Getting a recorded file onto this machine: the local copy if it checks out, else GridFS."""

from __future__ import annotations

from pathlib import Path

import gridfs
from bson import ObjectId
from pymongo.database import Database

from services.files import CHUNK, atomic_write_chunks, sha256_file
from tracking.errors import ChecksumMismatchError, NotFoundError
from tracking.schema import GRIDFS_BUCKET


def fetch_file(
    db: Database,
    *,
    path: str | Path,
    sha256: str | None,
    gridfs_id: ObjectId | None,
    dest: Path,
    label: str,
) -> Path:
    """``path`` when it exists here with checksum ``sha256``, else the GridFS copy saved to ``dest``.

    The download goes to a temporary file next to ``dest`` and is renamed only once its sha256
    matches, so a corrupt copy never appears under ``dest``.

    Raises
    ------
    NotFoundError
        When the file is neither here (with the right checksum) nor in GridFS.
    ChecksumMismatchError
        When the GridFS copy does not match ``sha256``.
    """
    path = Path(path)
    local_state = "missing"
    if path.is_file():
        if sha256 is not None and sha256_file(path) == sha256:
            return path
        local_state = (
            "present with a different sha256" if sha256 else "present, without a recorded sha256"
        )
    if gridfs_id is None:
        raise NotFoundError(
            f"{label}: {path} is {local_state} on this machine and no copy was uploaded to GridFS; "
            "copy the file here, or log checkpoints with upload=True / register them as models"
        )
    bucket = gridfs.GridFSBucket(db, bucket_name=GRIDFS_BUCKET)
    try:
        stream = bucket.open_download_stream(gridfs_id)
    except gridfs.errors.NoFile as exc:
        raise NotFoundError(
            f"{label}: {path} is {local_state} here and GridFS file {gridfs_id} does not exist"
        ) from exc
    dest = Path(dest)
    part = dest.with_name(dest.name + ".download")
    try:
        with stream:
            found = atomic_write_chunks(part, iter(lambda: stream.read(CHUNK), b""))
    except gridfs.errors.CorruptGridFile as exc:
        raise ChecksumMismatchError(
            f"{label}: GridFS file {gridfs_id} is corrupt ({exc}); expected sha256 {sha256}. "
            f"Re-upload it from a machine that has {path}"
        ) from exc
    if sha256 is not None and found != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{label}: GridFS file {gridfs_id} has sha256 {found}, expected {sha256}; the stored "
            f"copy is corrupt. Re-upload it from a machine that has {path} with the right checksum"
        )
    part.replace(dest)
    return dest
