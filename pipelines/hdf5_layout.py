"""Layouts of EEG2025-style HDF5 window files: detection and validation of what a file holds.

Two layouts are detected (docs/features.md, "Inputs"); any other can be described with
:class:`H5Layout` (``--map`` on the command line):

* Challenge 2: ``data`` (N, C, T) + ``subjects`` (N,) + ``targets`` (externalizing) + optional
  ``p_factors``; root attrs ``sfreq``, ``n_windows``, ``n_channels``, ``n_times``, ``release``.
* Challenge 1: ``eeg`` (N, C, T) + ``subject_ids`` (N,) + ``labels`` (response time, s); root attrs
  ``sfreq``, ``n_windows``, ``n_channels``, ``n_timepoints``, ``release``.

:func:`describe_window_file` validates an open file completely, before any computation: the
datasets present, rank 3, channel/sample/window counts consistent with the attributes, ``sfreq``
present (or given), per-window arrays of length N, channel names of length C, a known unit. Every
problem raises :class:`~pipelines.errors.InputDataError` naming the file, the dataset and a fix.
Reading the windows is :mod:`pipelines.hdf5_io`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pipelines.bandpower import unit_scale_to_uv
from pipelines.errors import InputDataError
from services.ids import normalize_subject_id

#: Names of the reference channel (flat in HBN recordings); E129 is an alias of Cz.
REFERENCE_CHANNELS = frozenset({"Cz", "E129"})
_MAPPING_FIX = "Fix: pass an explicit mapping of dataset names (--map data=... --map subjects=...)"


@dataclass(frozen=True)
class H5Layout:
    """Dataset names of one HDF5 layout.

    Parameters
    ----------
    name : str
        Layout name, e.g. ``"challenge2"``.
    challenge : int
        Which challenge's feature views the file feeds (1 or 2).
    data : str
        Windows dataset, shape (n_windows, n_channels, n_times).
    subjects : str
        Per-window subject ids (bytes or str, with or without ``sub-``).
    labels : mapping of label name -> dataset
        Per-window labels; a missing optional one is skipped (see ``required_labels``).
    n_times_attr : str
        Root attribute that states n_times (checked when present).
    required_labels : tuple of str
        Label names that must be present.
    """

    name: str
    challenge: int
    data: str
    subjects: str
    labels: Mapping[str, str] = field(default_factory=dict)
    n_times_attr: str = "n_times"
    required_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.challenge not in (1, 2):
            raise ValueError(
                f"layout {self.name!r}: challenge must be 1 or 2, got {self.challenge}"
            )


CHALLENGE2_LAYOUT = H5Layout(
    name="challenge2",
    challenge=2,
    data="data",
    subjects="subjects",
    labels={"externalizing": "targets", "p_factor": "p_factors"},
    n_times_attr="n_times",
    required_labels=(),
)
CHALLENGE1_LAYOUT = H5Layout(
    name="challenge1",
    challenge=1,
    data="eeg",
    subjects="subject_ids",
    labels={"response_time": "labels"},
    n_times_attr="n_timepoints",
    required_labels=(),
)
KNOWN_LAYOUTS = {"challenge2": CHALLENGE2_LAYOUT, "challenge1": CHALLENGE1_LAYOUT}


def layout_from_mapping(mapping: Mapping[str, str], base: H5Layout | None = None) -> H5Layout:
    """A layout from ``{"data": ..., "subjects": ..., "challenge": "1", "label:<name>": ...}``.

    Keys not given come from ``base`` (default: the Challenge 2 layout).
    """
    base = base or CHALLENGE2_LAYOUT
    known = {"data", "subjects", "challenge", "name"}
    labels = dict(base.labels)
    for key, value in mapping.items():
        if key.startswith("label:"):
            labels[key[len("label:") :]] = value
        elif key not in known:
            raise ValueError(
                f"unknown dataset mapping key {key!r}; expected data, subjects, challenge, name "
                "or label:<name> (e.g. label:response_time=labels)"
            )
    try:
        challenge = int(mapping.get("challenge", base.challenge))
    except ValueError as exc:
        raise ValueError(f"challenge must be 1 or 2, got {mapping.get('challenge')!r}") from exc
    return H5Layout(
        name=mapping.get("name", f"custom_challenge{challenge}"),
        challenge=challenge,
        data=mapping.get("data", base.data),
        subjects=mapping.get("subjects", base.subjects),
        labels=labels,
        n_times_attr=base.n_times_attr,
    )


def default_channel_names(n_channels: int) -> list[str]:
    """E1..E128 + Cz for 129 channels (HBN EGI montage), else ch0..ch{n-1}."""
    if n_channels == 129:
        return [f"E{i}" for i in range(1, 129)] + ["Cz"]
    return [f"ch{i}" for i in range(n_channels)]


def detect_layout(f: h5py.File, path: Path) -> H5Layout:
    """The known layout whose windows dataset is present (``data`` or ``eeg``)."""
    found = [lay for lay in KNOWN_LAYOUTS.values() if lay.data in f]
    if len(found) == 1:
        return found[0]
    keys = sorted(f.keys())
    if not found:
        raise InputDataError(
            f"{path}: no windows dataset: expected 'data' (Challenge 2 layout) or 'eeg' "
            f"(Challenge 1 layout), found {keys}. Fix: pass an explicit mapping, e.g. "
            "--map data=<dataset> --map subjects=<dataset> --map challenge=2"
        )
    raise InputDataError(
        f"{path}: both 'data' and 'eeg' datasets are present ({keys}); the layout is ambiguous. "
        "Fix: choose one with --layout challenge1|challenge2"
    )


@dataclass
class WindowFileInfo:
    """What a validated window file holds (plain values read when it was opened)."""

    path: Path
    layout: H5Layout
    n_windows: int
    n_channels: int
    n_times: int
    sfreq: float
    channel_names: list[str]
    to_uv: float
    release: str
    subject_ids: list[str]  # per window, normalised
    labels: dict[str, np.ndarray]  # per window, float64

    @property
    def reference_mask(self) -> np.ndarray:
        """True for reference channels (excluded from the window quality verdict)."""
        return np.array([c in REFERENCE_CHANNELS for c in self.channel_names], bool)


def describe_window_file(
    f: h5py.File,
    path: Path,
    layout: H5Layout | None = None,
    sfreq: float | None = None,
    channel_names: Sequence[str] | None = None,
) -> WindowFileInfo:
    """Validate the open file ``f`` completely and describe it (see the module docstring).

    Parameters
    ----------
    f : h5py.File
        The open file.
    path : Path
        Its path (for messages).
    layout : H5Layout, optional
        Dataset names; default: detected (Challenge 2 ``data`` or Challenge 1 ``eeg``).
    sfreq : float, optional
        Sampling rate in Hz when the file has no ``sfreq`` attribute (must agree when it has).
    channel_names : sequence of str, optional
        Channel names when the file has none (default E1..E128 + Cz for 129 channels).

    Returns
    -------
    WindowFileInfo

    Raises
    ------
    InputDataError
        Naming the file, the dataset and the problem.
    """
    lay = layout or detect_layout(f, path)
    try:
        n, n_ch, n_t = _windows_shape(f, path, lay)
        return WindowFileInfo(
            path=path,
            layout=lay,
            n_windows=n,
            n_channels=n_ch,
            n_times=n_t,
            sfreq=_sampling_rate(f.attrs, path, sfreq),
            subject_ids=_subject_ids(f, path, lay, n),
            labels=_labels(f, path, lay, n),
            channel_names=_channel_names(f, path, n_ch, channel_names),
            to_uv=_unit_scale(f.attrs, path),
            release=_text(f.attrs["release"]) if "release" in f.attrs else "",
        )
    except InputDataError:
        raise
    except (OSError, RuntimeError, KeyError) as exc:
        raise InputDataError(
            f"{path}: reading the file's structure failed ({exc}); it is truncated or corrupt. "
            "Fix: re-copy or re-export the file"
        ) from exc


def _text(value) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _dataset(f: h5py.File, path: Path, name: str, what: str) -> h5py.Dataset:
    if name not in f:
        raise InputDataError(
            f"{path}: missing dataset {name!r} ({what}); found {sorted(f.keys())}. {_MAPPING_FIX}"
        )
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise InputDataError(
            f"{path}: {name!r} is a group, expected a dataset ({what}). {_MAPPING_FIX}"
        )
    return obj


def _windows_shape(f: h5py.File, path: Path, lay: H5Layout) -> tuple[int, int, int]:
    """(n_windows, n_channels, n_times) of the windows dataset, checked against the attributes."""
    ds = _dataset(f, path, lay.data, "EEG windows, (n_windows, n_channels, n_times)")
    if ds.ndim != 3:
        raise InputDataError(
            f"{path}: dataset {lay.data!r} has rank {ds.ndim} (shape {ds.shape}), expected rank 3 "
            "(n_windows, n_channels, n_times). Fix: reshape the windows before writing the file"
        )
    if ds.dtype.kind != "f":
        raise InputDataError(
            f"{path}: dataset {lay.data!r} has dtype {ds.dtype}, expected float32/float64 samples"
        )
    n, n_ch, n_t = (int(v) for v in ds.shape)
    if n == 0 or n_ch == 0 or n_t == 0:
        raise InputDataError(f"{path}: dataset {lay.data!r} is empty (shape {ds.shape})")
    for attr, actual in (("n_windows", n), ("n_channels", n_ch), (lay.n_times_attr, n_t)):
        stated = int(np.asarray(f.attrs[attr]).item()) if attr in f.attrs else actual
        if stated != actual:
            raise InputDataError(
                f"{path}: attribute {attr}={stated} disagrees with dataset {lay.data!r} shape "
                f"{ds.shape} ({attr} should be {actual}). The file is inconsistent (truncated "
                "write?); re-export it"
            )
    return n, n_ch, n_t


def _sampling_rate(attrs: h5py.AttributeManager, path: Path, given: float | None) -> float:
    file_sfreq = float(np.asarray(attrs["sfreq"]).item()) if "sfreq" in attrs else None
    if file_sfreq is None and given is None:
        raise InputDataError(
            f"{path}: no 'sfreq' root attribute and no sampling rate given. Fix: pass --sfreq HZ"
        )
    if file_sfreq is not None and given is not None and not math.isclose(file_sfreq, given):
        raise InputDataError(
            f"{path}: attribute sfreq={file_sfreq} Hz disagrees with the given {given} Hz; "
            "drop --sfreq or fix the file"
        )
    rate = float(file_sfreq if file_sfreq is not None else given)  # type: ignore[arg-type]
    if not (math.isfinite(rate) and rate > 0):
        raise InputDataError(f"{path}: sfreq={rate} is not a positive number of Hz")
    return rate


def _unit_scale(attrs: h5py.AttributeManager, path: Path) -> float:
    unit = _text(attrs["units"]) if "units" in attrs else None
    try:
        return unit_scale_to_uv(unit)
    except ValueError as exc:
        raise InputDataError(f"{path}: attribute units={unit!r}: {exc}") from exc


def _subject_ids(f: h5py.File, path: Path, lay: H5Layout, n: int) -> list[str]:
    ds = _dataset(f, path, lay.subjects, "per-window subject ids")
    if ds.shape != (n,):
        raise InputDataError(
            f"{path}: dataset {lay.subjects!r} has shape {ds.shape}, expected ({n},): one "
            f"subject id per window of {lay.data!r}. Fix: re-export with matching lengths"
        )
    try:
        texts = [_text(v) for v in ds[()]]
    except (OSError, TypeError) as exc:
        raise InputDataError(f"{path}: dataset {lay.subjects!r} is unreadable: {exc}") from exc
    ids = []
    for i, text in enumerate(texts):
        try:
            ids.append(normalize_subject_id(text))
        except ValueError as exc:  # services.ids.SubjectIdError: names the id and the fix
            raise InputDataError(f"{path}: {exc} (dataset {lay.subjects!r}, window {i})") from exc
    return ids


def _labels(f: h5py.File, path: Path, lay: H5Layout, n: int) -> dict[str, np.ndarray]:
    labels: dict[str, np.ndarray] = {}
    for label, name in lay.labels.items():
        if name not in f and label not in lay.required_labels:
            continue
        ds = _dataset(f, path, name, f"per-window label {label}")
        if ds.shape != (n,):
            raise InputDataError(
                f"{path}: dataset {name!r} ({label}) has shape {ds.shape}, expected ({n},): "
                f"one value per window of {lay.data!r}. Fix: re-export with matching lengths"
            )
        try:
            labels[label] = np.asarray(ds[()], dtype=np.float64)
        except (OSError, ValueError, TypeError) as exc:
            raise InputDataError(
                f"{path}: dataset {name!r} ({label}) is unreadable: {exc}"
            ) from exc
    return labels


def _channel_names(f: h5py.File, path: Path, n_ch: int, given: Sequence[str] | None) -> list[str]:
    raw = None
    if "ch_names" in f:
        raw = f["ch_names"][()]
    elif "ch_names" in f.attrs:
        raw = f.attrs["ch_names"]
    if raw is not None:
        names = [_text(v) for v in np.atleast_1d(raw)]
        if len(names) != n_ch:
            raise InputDataError(
                f"{path}: 'ch_names' lists {len(names)} channels, the windows have {n_ch}. "
                "Fix: re-export the file with one name per channel"
            )
    elif given is not None:
        names = list(given)
        if len(names) != n_ch:
            raise InputDataError(
                f"{path}: {len(names)} channel names given, the windows have {n_ch} channels"
            )
    else:
        names = default_channel_names(n_ch)
    if len(set(names)) != len(names):
        raise InputDataError(f"{path}: channel names are not unique: {names}")
    return names


__all__ = [
    "CHALLENGE1_LAYOUT",
    "CHALLENGE2_LAYOUT",
    "KNOWN_LAYOUTS",
    "REFERENCE_CHANNELS",
    "H5Layout",
    "WindowFileInfo",
    "default_channel_names",
    "describe_window_file",
    "detect_layout",
    "layout_from_mapping",
]
