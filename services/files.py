"""File helpers shared by every package: sha256 of a file, atomic writes and copies, fsync.

Atomic write: the content goes to a temporary file in the destination's directory (same file
system, so the rename is atomic), is flushed and fsynced, then ``os.replace``-d over the
destination and the directory is fsynced. Readers see the old file or the new one, never a
half-written one; on any error the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Read size for hashing and copying (1 MiB).
CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str], *, chunk: int = CHUNK) -> str:
    """Hex sha256 of the bytes of the file at ``path``, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush the file at ``path`` to stable storage (for files written through a path, e.g. by
    h5py, matplotlib or gzip, whose handle is already closed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (a rename, a new file) durable. No-op where directories cannot
    be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):  # Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, mode: int | None = 0o644, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it to ``path``.

    Write the content to the yielded path (any writer: ``open``, h5py, ``torch.save``,
    ``savefig``...). When the ``with`` block raises, the temporary file is removed and ``path``
    is left as it was. The parent directory is created when missing.

    Parameters
    ----------
    path : path
        Destination.
    mode : int or None
        Permission bits of the new file (``tempfile.mkstemp`` creates 0600); None keeps 0600.
    suffix : str
        Suffix of the temporary name (``.<name>.<random><suffix>``, a dot-file).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = 0o644
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", mode: int | None = 0o644
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to ``path`` atomically (see :func:`atomic_path`), hashing as it goes.

    Returns the hex sha256 of what was written. Nothing is left at ``path`` on failure (a
    download stream that breaks half-way, say).
    """
    digest = hashlib.sha256()
    with atomic_path(path, suffix=".part") as tmp, open(tmp, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def atomic_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> str:
    """Copy ``src`` to ``dest`` atomically and return the sha256 of the copied bytes.

    Hashing the bytes copied (not the source afterwards) gives the checksum of the copy even
    when ``src`` is overwritten at the same time, e.g. by the next checkpoint save.
    """
    with open(src, "rb") as fh:
        return atomic_write_chunks(dest, iter(lambda: fh.read(CHUNK), b""))


__all__ = [
    "CHUNK",
    "atomic_copy",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_chunks",
    "atomic_write_text",
    "fsync_dir",
    "fsync_file",
    "sha256_file",
]
