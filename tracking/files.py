"""File helpers: sha256 in one pass, copies that hash as they go, atomic placement."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(dest: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to ``dest`` through a temporary file in the same directory + os.replace.

    Returns the hex sha256 of what was written. Nothing is left at ``dest`` on failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return digest.hexdigest()


def copy_hashing(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` atomically and return the sha256 of the copied bytes."""
    with open(src, "rb") as fh:
        return write_atomic(dest, iter(lambda: fh.read(CHUNK), b""))
