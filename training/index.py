"""The window index: which windows of which HDF5 files a run uses, whose they are, their targets.

Files are validated and described by :func:`pipelines.hdf5_io.open_windows` (layout detection,
shapes, attributes, channel names, units, subject ids, labels): Challenge 2 files (``data``,
``subjects``, labels ``externalizing`` = ``targets`` and ``p_factor`` = ``p_factors``) and
Challenge 1 files (``eeg``, ``subject_ids``, label ``response_time`` = ``labels``). Windows whose
target is missing are dropped and counted; files with different channels or rates are refused.
The windows themselves are read by :class:`training.data.WindowDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import DataError

#: Target label used when none is given, per layout (label names as in pipelines.hdf5_layout).
DEFAULT_TARGETS = {"challenge2": "externalizing", "challenge1": "response_time"}


@dataclass(frozen=True)
class FileInfo:
    """What :func:`build_index` learnt about one file."""

    path: str
    layout: str
    data_name: str
    target_name: str
    n_windows: int
    n_channels: int
    n_times: int
    sfreq: float
    release: str
    to_uv: float
    ch_names: tuple[str, ...] = field(repr=False)
    n_missing_target: int = 0

    def summary(self) -> dict:
        return {
            "path": self.path,
            "layout": self.layout,
            "target": self.target_name,
            "release": self.release,
            "n_windows": self.n_windows,
            "n_channels": self.n_channels,
            "n_times": self.n_times,
            "sfreq": self.sfreq,
            "dropped_missing_target": self.n_missing_target,
        }


@dataclass(frozen=True)
class WindowIndex:
    """Every usable window of a set of files: where it is, whose it is and its target.

    Arrays have one entry per kept window (windows with a missing target are dropped and counted
    in ``FileInfo.n_missing_target``).
    """

    files: tuple[FileInfo, ...]
    file_idx: np.ndarray  # (N,) int32
    rows: np.ndarray  # (N,) int64, row inside the file
    subjects: np.ndarray  # (N,) object (str, NDAR... form)
    targets: np.ndarray  # (N,) float32
    releases: np.ndarray  # (N,) object (str)
    dropped_subjects: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def n_channels(self) -> int:
        return self.files[0].n_channels

    @property
    def n_times(self) -> int:
        return min(f.n_times for f in self.files)

    @property
    def sfreq(self) -> float:
        return self.files[0].sfreq

    @property
    def n_dropped(self) -> int:
        return sum(f.n_missing_target for f in self.files)

    def summary(self) -> dict:
        return {
            "files": [f.summary() for f in self.files],
            "n_windows": len(self),
            "n_subjects": len(set(self.subjects.tolist())),
            "dropped_missing_target": self.n_dropped,
            "subjects_without_target": list(self.dropped_subjects),
        }


def read_file_info(
    path: str | os.PathLike[str],
    *,
    target: str | None = None,
    layout: str | None = None,
    require_target: bool = True,
) -> tuple[FileInfo, np.ndarray, np.ndarray]:
    """Validate one file (with :func:`pipelines.hdf5_io.open_windows`) and read its labels.

    Parameters
    ----------
    path : path
    target : str, optional
        Label name (``externalizing`` or ``p_factor`` for Challenge 2 files, ``response_time`` for
        Challenge 1 files); default per layout (:data:`DEFAULT_TARGETS`).
    layout : str, optional
        ``challenge1`` or ``challenge2``; default: detected.
    require_target : bool
        When False, a file without the target label is accepted: its targets are all NaN and
        ``info.target_name`` is ``""`` (prediction on new recordings).

    Returns
    -------
    info : FileInfo
    subjects : np.ndarray, shape (n_windows,), object (str, ``NDAR...`` form)
    targets : np.ndarray, shape (n_windows,), float32 (NaN where missing)
    """
    from pipelines.errors import InputDataError
    from pipelines.hdf5_io import open_windows
    from pipelines.hdf5_layout import KNOWN_LAYOUTS

    lay = None
    if layout is not None:
        if layout not in KNOWN_LAYOUTS:
            raise DataError(f"unknown layout {layout!r}; expected one of {sorted(KNOWN_LAYOUTS)}")
        lay = KNOWN_LAYOUTS[layout]
    try:
        windows = open_windows(path, layout=lay)
    except InputDataError as exc:
        raise DataError(_training_fix(str(exc))) from exc
    with windows:
        name = windows.layout.name
        target_name = target or DEFAULT_TARGETS.get(name)
        if target_name not in windows.labels and not require_target:
            target_name = ""
            targets = np.full(windows.n_windows, np.nan, dtype=np.float32)
        elif target_name not in windows.labels:
            raise DataError(
                f"{windows.path}: no target {target_name!r} in this {name} file; it has "
                f"{sorted(windows.labels) or 'no labels'} (datasets "
                f"{dict(windows.layout.labels)}). Pass --target with one of them"
            )
        else:
            targets = np.asarray(windows.labels[target_name], dtype=np.float32)
        info = FileInfo(
            path=str(windows.path),
            layout=name,
            data_name=windows.layout.data,
            target_name=target_name,
            n_windows=windows.n_windows,
            n_channels=windows.n_channels,
            n_times=windows.n_times,
            sfreq=float(windows.sfreq),
            release=windows.release or Path(path).stem,
            to_uv=float(windows.to_uv),
            ch_names=tuple(windows.channel_names),
            n_missing_target=int(np.isnan(targets).sum()),
        )
        subjects = np.array(windows.subject_ids, dtype=object)
    return info, subjects, targets


def build_index(
    paths: Sequence[str | os.PathLike[str]],
    *,
    target: str | None = None,
    layout: str | None = None,
    keep_unlabelled: bool = False,
) -> WindowIndex:
    """Index the usable windows of ``paths``; windows whose target is NaN are dropped and counted.

    With ``keep_unlabelled`` (prediction), every window is kept, its target NaN when missing,
    and a file without the target label is accepted (``FileInfo.target_name`` is ``""``).

    Raises
    ------
    DataError
        A file is missing or unreadable, files disagree on channels or sampling rate, or no
        window is left.
    """
    if not paths:
        raise DataError("no input files given; pass --data FILE [FILE ...]")
    infos: list[FileInfo] = []
    file_idx, rows, subjects, targets, releases = [], [], [], [], []
    all_subjects: set[str] = set()
    for i, path in enumerate(paths):
        info, subj, targ = read_file_info(
            path, target=target, layout=layout, require_target=not keep_unlabelled
        )
        if infos:
            first = infos[0]
            if info.ch_names != first.ch_names:
                raise DataError(
                    f"{info.path}: channels {info.n_channels} ({info.ch_names[:3]}...) differ from "
                    f"{first.path} ({first.n_channels}, {first.ch_names[:3]}...); files with "
                    "different channel sets or orders are not mixed: train on one montage"
                )
            if info.sfreq != first.sfreq:
                raise DataError(
                    f"{info.path}: sfreq {info.sfreq} Hz differs from {first.path} "
                    f"({first.sfreq} Hz); resample to one rate first"
                )
        infos.append(info)
        all_subjects.update(subj.tolist())
        keep = np.ones(targ.shape, dtype=bool) if keep_unlabelled else ~np.isnan(targ)
        kept = np.flatnonzero(keep)
        file_idx.append(np.full(kept.shape[0], i, dtype=np.int32))
        rows.append(kept.astype(np.int64))
        subjects.append(subj[keep])
        targets.append(targ[keep])
        releases.append(np.full(kept.shape[0], info.release, dtype=object))
    index = WindowIndex(
        files=tuple(infos),
        file_idx=np.concatenate(file_idx),
        rows=np.concatenate(rows),
        subjects=np.concatenate(subjects),
        targets=np.concatenate(targets).astype(np.float32),
        releases=np.concatenate(releases),
        dropped_subjects=(),
    )
    kept_subjects = set(index.subjects.tolist())
    index = WindowIndex(
        files=index.files,
        file_idx=index.file_idx,
        rows=index.rows,
        subjects=index.subjects,
        targets=index.targets,
        releases=index.releases,
        dropped_subjects=tuple(sorted(all_subjects - kept_subjects)),
    )
    if len(index) == 0:
        raise DataError(
            f"no window with a target in {[str(p) for p in paths]} "
            f"({index.n_dropped} windows had a missing target); check --target"
        )
    return index


__all__ = ["DEFAULT_TARGETS", "FileInfo", "WindowIndex", "build_index", "read_file_info"]


#: Options of the file-reading commands that ``eegfs train`` does not have.
_LAYOUT_OPTIONS = ("--map", "--layout", "--sfreq")
_TRAIN_LAYOUT_FIX = (
    "Fix: `eegfs train` reads the EEG2025 layouts as they are (Challenge 2: data, targets, "
    "subjects; Challenge 1: eeg, labels, subject_ids; an sfreq root attribute): rename the "
    "datasets or add the attribute with h5py, or build features from the file with "
    "`eegfs features build --map ...`"
)


def _training_fix(message: str) -> str:
    """``message`` of the HDF5 reader with a fix that ``eegfs train`` can follow: the reader's
    own fix names options (--map, --layout, --sfreq) of the commands that have them."""
    text, sep, fix = message.partition(" Fix: ")
    if sep and any(option in fix for option in _LAYOUT_OPTIONS):
        return f"{text} {_TRAIN_LAYOUT_FIX}"
    return message
