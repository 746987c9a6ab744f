"""``eegfs datasets register FILES``: catalogue HDF5 window files in ``datasets``.

The metadata is read with h5py directly (no pipelines import). Two EEG2025 cache layouts:

* Challenge 2: ``data`` (N, C, T) + attrs ``sfreq``, ``n_windows``, ``n_channels``, ``n_times``,
  ``release``; subjects in ``subjects``.
* Challenge 1: ``eeg`` (N, C, T) + attrs ``sfreq``, ``release``, ``n_windows``, ``n_channels``,
  ``n_timepoints``; subjects in ``subject_ids``.

One document per file content (unique ``sha256``)::

    {sha256, path, host, locations: [{host, path}], challenge, layout, dataset, release, task,
     windows, channels, samples, sfreq, window_s, n_subjects, dtype, compression, size_bytes,
     attrs: {...root attributes...}, warnings: [...], registered_at, updated_at}

Registering the same file again updates it in place; the same content at another path adds a
location.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymongo.database import Database

from tracking.documents import to_document
from tracking.errors import DatasetError
from tracking.files import sha256_file
from tracking.schema import DATASETS
from tracking.timeutil import utcnow

#: dataset key -> (challenge, layout name, subjects dataset, attribute holding the sample count)
LAYOUTS = {
    "data": (2, "challenge2", "subjects", "n_times"),
    "eeg": (1, "challenge1", "subject_ids", "n_timepoints"),
}


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return _attr(item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return [_attr(v) for v in tolist()] if getattr(value, "ndim", 0) else tolist()
    return value


def read_hdf5_metadata(path: Path) -> dict[str, Any]:
    """Catalogue fields of one HDF5 window file (without its sha256).

    Raises
    ------
    DatasetError
        When the file is missing, not HDF5, or holds neither ``data`` nor ``eeg`` as a
        3-D (windows, channels, samples) dataset.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with fh:
        key = next((k for k in LAYOUTS if k in fh), None)
        if key is None:
            raise DatasetError(
                f"{path}: no 'data' (Challenge 2 layout) or 'eeg' (Challenge 1 layout) dataset; "
                f"found {', '.join(sorted(fh.keys())) or 'nothing'}"
            )
        challenge, layout, subjects_key, samples_attr = LAYOUTS[key]
        dset = fh[key]
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 3:
            raise DatasetError(
                f"{path}: '{key}' should be a (windows, channels, samples) array, found "
                f"{getattr(dset, 'shape', type(dset).__name__)}"
            )
        windows, channels, samples = (int(n) for n in dset.shape)
        attrs = {str(k): _attr(v) for k, v in fh.attrs.items()}
        warnings = []
        for attr, actual in (
            ("n_windows", windows),
            ("n_channels", channels),
            (samples_attr, samples),
        ):
            if attr in attrs and attrs[attr] != actual:
                warnings.append(f"attribute {attr}={attrs[attr]} but '{key}' has {actual}")
        n_subjects = None
        if subjects_key in fh and isinstance(fh[subjects_key], h5py.Dataset):
            n_subjects = len({_attr(v) for v in fh[subjects_key][()]})
        sfreq = attrs.get("sfreq")
        return {
            "path": str(path.resolve()),
            "challenge": challenge,
            "layout": layout,
            "dataset": key,
            "release": attrs.get("release"),
            "task": attrs.get("task"),
            "windows": windows,
            "channels": channels,
            "samples": samples,
            "sfreq": float(sfreq) if sfreq is not None else None,
            "window_s": samples / float(sfreq) if sfreq else None,
            "n_subjects": n_subjects,
            "dtype": str(dset.dtype),
            "compression": dset.compression,
            "size_bytes": path.stat().st_size,
            "attrs": attrs,
            "warnings": warnings,
        }


def register_files(
    db: Database, paths: Sequence[Path], *, progress: bool = False
) -> list[dict[str, Any]]:
    """Record each HDF5 file (metadata + sha256) in ``datasets``; returns the stored documents.

    Every file is read and hashed before anything is written, so one bad file leaves the
    catalogue untouched.
    """
    if not paths:
        raise DatasetError("no files given; pass one or more HDF5 files")
    iterator = list(paths)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="reading and hashing", unit="file")
    records = []
    for path in iterator:
        meta = read_hdf5_metadata(Path(path))
        meta["sha256"] = sha256_file(Path(path))
        records.append(to_document(meta, str(path)))
    host = socket.gethostname()
    now = utcnow()
    stored = []
    for meta in records:
        db[DATASETS].update_one(
            {"sha256": meta["sha256"]},
            {"$set": {**meta, "host": host, "updated_at": now},
             "$addToSet": {"locations": {"host": host, "path": meta["path"]}},
             "$setOnInsert": {"registered_at": now}},
            upsert=True,
        )  # fmt: skip
        stored.append(db[DATASETS].find_one({"sha256": meta["sha256"]}))
    return stored
