"""Write EEG2025-like demo data: HDF5 windows in both cache layouts plus a BIDS participants.tsv.

Files written into ``out_dir`` (see docs/demo_data.md):

* ``challenge2_<release>.h5``: ``data`` (N, 129, 400) float32 volts, ``targets`` (N,) float32
  externalizing, ``subjects`` (N,) bytes, ``p_factors`` (N,) float32; root attrs ``sfreq``,
  ``n_windows``, ``n_channels``, ``n_times``, ``release``, ``task``.
* ``challenge1_<release>.h5``: ``eeg`` (N, 129, 200) float32 volts, ``labels`` (N,) float32
  response time in seconds, ``subject_ids`` (N,) bytes; root attrs ``sfreq``, ``release``,
  ``n_windows``, ``n_channels``, ``n_timepoints``.
* ``participants.tsv``: one row per subject of every release, ``n/a`` for missing values.

Every file is written to a temporary name in ``out_dir`` and renamed into place, so an interrupted
run never leaves a half-written file; the same arguments give byte-identical files.

Randomness: subject ``i`` of release ``r`` uses ``SeedSequence([seed, crc32(r), 0]).spawn(n)[i]``,
split into three streams (traits, Challenge 2 windows, Challenge 1 windows); a subject's data does
not depend on how many subjects or windows are generated besides its own.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from demodata import synthetic_eeg as se
from demodata.errors import DemoDataError
from services.files import atomic_path

log = logging.getLogger(__name__)

#: Challenge 2 windows: 4 s at 100 Hz.
C2_N_TIMES = 400
#: Challenge 1 windows: 2 s at 100 Hz, stimulus-locked.
C1_N_TIMES = 200
C2_TASK = "RestingState"
C1_TASK = "contrastChangeDetection"
#: Trial-level log alpha power spread (natural log units) in each layout.
C2_ALPHA_FLUCTUATION_SD = 0.1
C1_ALPHA_FLUCTUATION_SD = 0.5
PARTICIPANT_COLUMNS = (
    "participant_id",
    "release_number",
    "sex",
    "age",
    "ehq_total",
    "p_factor",
    "attention",
    "internalizing",
    "externalizing",
)
_RELEASE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class DemoData:
    """What :func:`write_demo_data` wrote."""

    out_dir: Path
    challenge2: dict[str, Path]
    challenge1: dict[str, Path]
    participants: Path
    subjects: dict[str, list[str]]

    @property
    def files(self) -> list[Path]:
        """All HDF5 files, sorted."""
        return sorted([*self.challenge2.values(), *self.challenge1.values()])


@dataclass(frozen=True)
class _Subject:
    model: se.SubjectModel
    c2_seed: np.random.SeedSequence
    c1_seed: np.random.SeedSequence
    missing_scores: bool
    missing_age: bool
    missing_ehq: bool


def _release_seed(seed: int, release: str, stream: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(release.encode()), stream])


def _draw_release(seed: int, release: str, n_subjects: int) -> list[_Subject]:
    """Subjects of one release, with their seeds and which of their values are n/a."""
    children = _release_seed(seed, release, 0).spawn(n_subjects)
    models, seeds = [], []
    for child in children:
        traits_ss, c2_ss, c1_ss = child.spawn(3)
        models.append(se.draw_subject(np.random.default_rng(traits_ss)))
        seeds.append((c2_ss, c1_ss))
    # Missingness is a release-level choice so that every release has some: 1-2 subjects with no
    # questionnaire scores (their targets are NaN), a few without age or handedness.
    rng = np.random.default_rng(_release_seed(seed, release, 1))
    n_missing_scores = 0 if n_subjects < 3 else (1 if n_subjects < 12 else 2)
    n_missing_demo = max(1, n_subjects // 12) if n_subjects >= 3 else 0
    miss_scores = set(rng.choice(n_subjects, size=n_missing_scores, replace=False).tolist())
    miss_age = set(rng.choice(n_subjects, size=n_missing_demo, replace=False).tolist())
    miss_ehq = set(rng.choice(n_subjects, size=n_missing_demo, replace=False).tolist())
    return [
        _Subject(m, c2, c1, i in miss_scores, i in miss_age, i in miss_ehq)
        for i, (m, (c2, c1)) in enumerate(zip(models, seeds, strict=True))
    ]


def _dataset_kwargs(level: int) -> dict:
    # track_times=False keeps modification times out of the object headers: same bytes per run.
    return {"compression": "gzip", "compression_opts": level, "shuffle": True, "track_times": False}


def _write_h5(
    path: Path,
    subjects: list[_Subject],
    *,
    layout: str,
    release: str,
    seed: int,
    windows_per_subject: int,
    compression_level: int,
    advance: Callable[[int], None],
) -> None:
    c2 = layout == "challenge2"
    n_times = C2_N_TIMES if c2 else C1_N_TIMES
    n_ch = se.N_CHANNELS
    n = len(subjects) * windows_per_subject
    names = ("data", "targets", "subjects") if c2 else ("eeg", "labels", "subject_ids")
    kw = _dataset_kwargs(compression_level)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="earliest") as f:
        x = f.create_dataset(
            names[0], shape=(n, n_ch, n_times), dtype="float32", chunks=(1, n_ch, n_times), **kw
        )
        y = np.empty(n, dtype=np.float32)
        ids = np.empty(n, dtype="S12")
        pf = np.empty(n, dtype=np.float32)
        for k, subj in enumerate(subjects):
            m = subj.model
            sl = slice(k * windows_per_subject, (k + 1) * windows_per_subject)
            rng = np.random.default_rng(subj.c2_seed if c2 else subj.c1_seed)
            batch = se.synthesize_windows(
                m,
                rng,
                windows_per_subject,
                n_times,
                alpha_fluctuation_sd=C2_ALPHA_FLUCTUATION_SD if c2 else C1_ALPHA_FLUCTUATION_SD,
            )
            x[sl] = batch.data
            ids[sl] = m.subject_id.encode("ascii")
            if c2:
                y[sl] = np.nan if subj.missing_scores else _round(m.externalizing)
                pf[sl] = np.nan if subj.missing_scores else _round(m.p_factor)
            else:
                y[sl] = se.response_times(m, batch.alpha_log_power, rng)
            advance(windows_per_subject)
        small = {"chunks": None, "track_times": False}
        f.create_dataset(names[1], data=y, **small)
        f.create_dataset(names[2], data=ids, **small)
        if c2:
            f.create_dataset("p_factors", data=pf, **small)
        f.attrs["sfreq"] = se.SFREQ
        f.attrs["release"] = release
        f.attrs["n_windows"] = n
        f.attrs["n_channels"] = n_ch
        f.attrs["n_times" if c2 else "n_timepoints"] = n_times
        f.attrs["task"] = C2_TASK if c2 else C1_TASK
        f.attrs["generator"] = "eegfs demo-data (synthetic EEG, not recordings)"
        f.attrs["seed"] = seed


def _round(v: float) -> float:
    """Scores as stored in participants.tsv (3 decimals), so HDF5 and TSV agree exactly."""
    return float(f"{v:.3f}")


def _fmt(v: float, missing: bool, digits: int) -> str:
    return "n/a" if missing or not math.isfinite(v) else f"{v:.{digits}f}"


def _participants_rows(release: str, subjects: list[_Subject]) -> list[str]:
    rows = []
    for s in subjects:
        m = s.model
        rows.append(
            "\t".join(
                [
                    f"sub-{m.subject_id}",
                    release,
                    m.sex,
                    _fmt(m.age, s.missing_age, 2),
                    _fmt(m.ehq_total, s.missing_ehq, 1),
                    *(
                        _fmt(v, s.missing_scores, 3)
                        for v in (m.p_factor, m.attention, m.internalizing, m.externalizing)
                    ),
                ]
            )
        )
    return rows


def _validate(
    out_dir: Path,
    seed: int,
    subjects_per_release: int,
    releases: tuple[str, ...],
    c2_windows: int,
    c1_windows: int,
    compression_level: int,
) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, v in (
        ("subjects_per_release", subjects_per_release),
        ("c2_windows_per_subject", c2_windows),
        ("c1_windows_per_subject", c1_windows),
    ):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not releases or len(set(releases)) != len(releases):
        raise ValueError(f"releases must be non-empty and unique, got {releases!r}")
    for r in releases:
        if not isinstance(r, str) or not _RELEASE_RE.match(r):
            raise ValueError(
                f"release name {r!r} is not usable in a file name; use letters, digits, '_-.' "
                "(e.g. 'R1')"
            )
    if not 0 <= compression_level <= 9:
        raise ValueError(f"compression_level must be 0..9 (gzip), got {compression_level}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory; pick another path")


def write_demo_data(
    out_dir: Path,
    *,
    seed: int = 0,
    subjects_per_release: int = 25,
    releases: tuple[str, ...] = ("R1", "R2"),
    c2_windows_per_subject: int = 20,
    c1_windows_per_subject: int = 24,
    compression_level: int = 4,
    progress: bool = True,
) -> DemoData:
    """Write synthetic EEG2025-like demo data into ``out_dir`` (created if needed).

    Parameters
    ----------
    out_dir : Path
        Directory for ``challenge2_<R>.h5``, ``challenge1_<R>.h5`` and ``participants.tsv``.
        Existing files of the same names are replaced (atomically).
    seed : int
        Root seed; the same seed and arguments give byte-identical files.
    subjects_per_release : int
        Subjects per release; the same subjects appear in both layouts of a release.
    releases : tuple of str
        Release names, e.g. ("R1", "R2").
    c2_windows_per_subject, c1_windows_per_subject : int
        Windows per subject in the Challenge 2 (4 s) and Challenge 1 (2 s) files.
    compression_level : int
        gzip level 0-9 (with the HDF5 shuffle filter).
    progress : bool
        Show a tqdm progress bar over windows (on stderr).

    Returns
    -------
    DemoData
    """
    out_dir = Path(out_dir)
    _validate(
        out_dir,
        seed,
        subjects_per_release,
        tuple(releases),
        c2_windows_per_subject,
        c1_windows_per_subject,
        compression_level,
    )
    from tqdm.auto import tqdm

    releases = tuple(releases)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoDataError(f"cannot create output directory {out_dir}: {exc}") from exc

    drawn = {r: _draw_release(int(seed), r, int(subjects_per_release)) for r in releases}
    all_ids = [s.model.subject_id for subs in drawn.values() for s in subs]
    if len(set(all_ids)) != len(all_ids):  # 36**8 ids: practically never, but never silently
        raise DemoDataError(f"seed {seed} drew a duplicate subject id; use another seed")

    total = len(releases) * subjects_per_release * (c2_windows_per_subject + c1_windows_per_subject)
    c2_paths: dict[str, Path] = {}
    c1_paths: dict[str, Path] = {}
    with tqdm(total=total, unit="win", desc="demo data", disable=not progress) as bar:
        for r in releases:
            for layout, n_win, paths in (
                ("challenge2", c2_windows_per_subject, c2_paths),
                ("challenge1", c1_windows_per_subject, c1_paths),
            ):
                path = out_dir / f"{layout}_{r}.h5"
                bar.set_postfix_str(path.name)
                try:
                    _write_h5(
                        path,
                        drawn[r],
                        layout=layout,
                        release=r,
                        seed=int(seed),
                        windows_per_subject=int(n_win),
                        compression_level=int(compression_level),
                        advance=bar.update,
                    )
                except OSError as exc:
                    raise DemoDataError(f"writing {path} failed: {exc}") from exc
                paths[r] = path
                log.info("wrote %s", path)

    participants = out_dir / "participants.tsv"
    lines = ["\t".join(PARTICIPANT_COLUMNS)]
    for r in releases:
        lines += _participants_rows(r, drawn[r])
    try:
        with atomic_path(participants) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise DemoDataError(f"writing {participants} failed: {exc}") from exc

    return DemoData(
        out_dir=out_dir,
        challenge2=c2_paths,
        challenge1=c1_paths,
        participants=participants,
        subjects={r: [s.model.subject_id for s in drawn[r]] for r in releases},
    )
