"""Copies that hash as they go, placed atomically (built on :mod:`services.files`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from services.files import CHUNK, atomic_path


def write_atomic(dest: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to ``dest`` atomically (:func:`services.files.atomic_path`).

    Returns the hex sha256 of what was written. Nothing is left at ``dest`` on failure.
    """
    digest = hashlib.sha256()
    with atomic_path(dest, suffix=".part") as tmp, open(tmp, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def copy_hashing(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` atomically and return the sha256 of the copied bytes."""
    with open(src, "rb") as fh:
        return write_atomic(dest, iter(lambda: fh.read(CHUNK), b""))


__all__ = ["copy_hashing", "write_atomic"]
