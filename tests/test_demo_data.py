"""Demo data: layouts, EEG realism, learnability, determinism, atomic writes, CLI.

The realism and learnability statistics are computed here from the files with
``scipy.signal.welch`` and plain NumPy, independently of the project's feature code.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.signal import welch

from demodata import synthetic_eeg as se
from demodata import writer as dd
from demodata.writer import DemoData, write_demo_data
from eegfs.cli import cli

SFREQ = 100.0
N_EEG = 128  # E1..E128; index 128 is Cz
# Between-subject statistics need enough subjects: 2 releases x 12.
STATS_KW = dict(
    seed=11,
    subjects_per_release=12,
    c2_windows_per_subject=8,
    c1_windows_per_subject=16,
    progress=False,
)
TINY_KW = dict(
    subjects_per_release=3, c2_windows_per_subject=2, c1_windows_per_subject=2, progress=False
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoData:
    return write_demo_data(tmp_path_factory.mktemp("demo_stats"), **STATS_KW)


def _read_c2(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["data"][()], f["targets"][()], f["p_factors"][()], f["subjects"][()]


def _read_participants(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def c2_subjects(demo) -> list[dict]:
    """Per subject of the Challenge 2 files: mean Welch PSD (uV^2/Hz), per-window PSDs, scores."""
    out = []
    for path in demo.challenge2.values():
        data, targets, pfs, subjects = _read_c2(path)
        for sid in dict.fromkeys(subjects):  # file order, unique
            sel = subjects == sid
            freqs, psd = welch(data[sel].astype(np.float64) * 1e6, fs=SFREQ, nperseg=200, axis=-1)
            out.append(
                {
                    "id": sid.decode(),
                    "x_uv": data[sel].astype(np.float64) * 1e6,
                    "freqs": freqs,
                    "psd_windows": psd,
                    "psd": psd.mean(axis=0),
                    "externalizing": float(targets[sel][0]),
                    "p_factor": float(pfs[sel][0]),
                    "targets_constant": bool(
                        np.all((targets[sel] == targets[sel][0]) | np.isnan(targets[sel]))
                    ),
                }
            )
    return out


def _band(freqs: np.ndarray, psd: np.ndarray, lo: float, hi: float) -> np.ndarray:
    sel = (freqs >= lo) & (freqs <= hi)
    return psd[..., sel].sum(axis=-1)


def _noisy_channels(subj: dict) -> np.ndarray:
    """Channels (not Cz) whose 1-45 Hz power is >= 4x the subject's median channel."""
    logp = np.log10(_band(subj["freqs"], subj["psd"][:N_EEG], 1.0, 45.0))
    return np.flatnonzero(logp > np.median(logp) + np.log10(4.0))


def _ordinary(subj: dict) -> np.ndarray:
    return np.setdiff1d(np.arange(N_EEG), _noisy_channels(subj))


def _rel_alpha(subj: dict) -> float:
    """Mean over ordinary channels of log10(8-13 Hz / 1-40 Hz power), from the mean PSD."""
    f, p = subj["freqs"], subj["psd"][_ordinary(subj)]
    return float(np.mean(np.log10(_band(f, p, 8.0, 13.0) / _band(f, p, 1.0, 40.0))))


# --- layouts ----------------------------------------------------------------------------------


def test_file_layouts_and_attrs(demo):
    assert sorted(demo.challenge2) == sorted(demo.challenge1) == ["R1", "R2"]
    assert demo.files == sorted(demo.files) and len(demo.files) == 4
    n_subj, w2, w1 = STATS_KW["subjects_per_release"], 8, 16
    for release, path in demo.challenge2.items():
        assert path == demo.out_dir / f"challenge2_{release}.h5"
        with h5py.File(path, "r") as f:
            assert set(f.keys()) == {"data", "targets", "subjects", "p_factors"}
            x = f["data"]
            assert x.shape == (n_subj * w2, 129, 400) and x.dtype == np.float32
            assert x.chunks == (1, 129, 400) and x.compression == "gzip"
            assert f["targets"].shape == f["p_factors"].shape == (n_subj * w2,)
            assert f["targets"].dtype == f["p_factors"].dtype == np.float32
            assert f["subjects"].dtype.kind == "S"
            a = dict(f.attrs)
            assert a["sfreq"] == 100 and a["n_windows"] == n_subj * w2
            assert (a["n_channels"], a["n_times"], a["release"]) == (129, 400, release)
            assert isinstance(a["task"], str) and a["task"]
            assert "ch_names" not in f and "ch_names" not in f.attrs
            ids = [s.decode() for s in dict.fromkeys(f["subjects"][()])]
        assert ids == demo.subjects[release]
        assert all(re.fullmatch(r"NDAR[A-Z0-9]{8}", s) for s in ids)
    for release, path in demo.challenge1.items():
        assert path == demo.out_dir / f"challenge1_{release}.h5"
        with h5py.File(path, "r") as f:
            assert set(f.keys()) == {"eeg", "labels", "subject_ids"}
            x = f["eeg"]
            assert x.shape == (n_subj * w1, 129, 200) and x.dtype == np.float32
            assert x.chunks == (1, 129, 200) and x.compression == "gzip"
            a = dict(f.attrs)
            assert (a["sfreq"], a["release"], a["n_windows"]) == (100, release, n_subj * w1)
            assert (a["n_channels"], a["n_timepoints"]) == (129, 200)
            assert "ch_names" not in f and "ch_names" not in f.attrs
            rt = f["labels"][()]
            assert np.all(np.isfinite(rt)) and rt.min() >= 0.2 and rt.max() <= 3.0
            assert [s.decode() for s in dict.fromkeys(f["subject_ids"][()])] == demo.subjects[
                release
            ]


def test_participants_tsv_matches_hdf5(demo):
    rows = _read_participants(demo.participants)
    assert list(rows[0]) == list(dd.PARTICIPANT_COLUMNS)
    assert [r["participant_id"] for r in rows] == [
        f"sub-{s}" for rel in ("R1", "R2") for s in demo.subjects[rel]
    ]
    for release in ("R1", "R2"):
        rel_rows = [r for r in rows if r["release_number"] == release]
        assert len(rel_rows) == STATS_KW["subjects_per_release"]
        assert {r["sex"] for r in rel_rows} <= {"M", "F"}
        missing = [r for r in rel_rows if r["externalizing"] == "n/a"]
        assert 1 <= len(missing) <= 2  # training must drop/count these subjects' windows
        assert all(r["p_factor"] == "n/a" for r in missing)
        assert any(r["age"] == "n/a" for r in rel_rows)
        assert any(r["ehq_total"] == "n/a" for r in rel_rows)
        for r in rel_rows:
            if r["age"] != "n/a":
                assert 5.0 <= float(r["age"]) <= 22.0
        # HDF5 targets equal the TSV scores (NaN where n/a), per subject.
        _, targets, pfs, subjects = _read_c2(demo.challenge2[release])
        for r in rel_rows:
            sel = subjects == r["participant_id"].removeprefix("sub-").encode()
            assert sel.any()
            for col, values in (("externalizing", targets), ("p_factor", pfs)):
                if r[col] == "n/a":
                    assert np.all(np.isnan(values[sel]))
                else:
                    np.testing.assert_allclose(values[sel], float(r[col]), atol=1e-6)


def test_scores_are_correlated_with_each_other(demo):
    rows = [r for r in _read_participants(demo.participants) if r["p_factor"] != "n/a"]
    cols = ("p_factor", "attention", "internalizing", "externalizing")
    m = np.array([[float(r[c]) for c in cols] for r in rows])
    corr = np.corrcoef(m.T)
    # all load on one general factor: each score follows p_factor, and all pairs are positive
    assert np.all(corr[0, 1:] > 0.3), corr
    assert np.all(corr[np.triu_indices(4, 1)] > 0.0), corr
    assert corr[np.triu_indices(4, 1)].mean() > 0.4, corr


# --- realism ----------------------------------------------------------------------------------


def test_rms_amplitude_of_ordinary_channels(demo, c2_subjects):
    for s in c2_subjects:
        rms = np.sqrt(np.mean(s["x_uv"][:, _ordinary(s)] ** 2, axis=(0, 2)))
        assert rms.min() >= 5.0 and rms.max() <= 50.0, (s["id"], rms.min(), rms.max())
    with h5py.File(demo.challenge1["R1"], "r") as f:
        x = f["eeg"][:, :N_EEG].astype(np.float64) * 1e6
    med = np.median(np.sqrt(np.mean(x**2, axis=-1)))
    assert 5.0 <= med <= 50.0


def test_psd_slope_is_one_over_f(c2_subjects):
    for s in c2_subjects:
        f, p = s["freqs"], s["psd"][_ordinary(s)]
        sel = (f >= 2.0) & (f <= 40.0)
        slope = np.polyfit(np.log10(f[sel]), np.log10(p[:, sel]).T, 1)[0]
        assert np.all((slope >= -2.5) & (slope <= -0.5)), (s["id"], slope.min(), slope.max())


def test_alpha_peak_on_most_channels(c2_subjects):
    for s in c2_subjects:
        f, p = s["freqs"], s["psd"][:N_EEG]
        fit = (f >= 2.0) & (f <= 40.0) & ~((f >= 7.0) & (f <= 14.0))
        coef = np.polyfit(np.log10(f[fit]), np.log10(p[:, fit]).T, 1)
        alpha = (f >= 8.0) & (f <= 13.0)
        trend = coef[0][:, None] * np.log10(f[alpha]) + coef[1][:, None]
        excess = (np.log10(p[:, alpha]) - trend).max(axis=1)
        # peak at least 1.5x above the 1/f trend
        assert np.mean(excess > np.log10(1.5)) >= 0.9, (s["id"], np.mean(excess > np.log10(1.5)))


def test_alpha_power_varies_between_subjects(c2_subjects):
    alpha = np.array([_band(s["freqs"], s["psd"][_ordinary(s)], 8, 13).mean() for s in c2_subjects])
    assert alpha.std() / alpha.mean() >= 0.3


def test_cz_reference_is_flat(demo):
    for path in demo.files:
        with h5py.File(path, "r") as f:
            x = f["data" if "data" in f else "eeg"]
            cz = x[:, 128, :].astype(np.float64) * 1e6
            assert np.all(cz.std(axis=-1) < 0.01)
            assert np.all(x[:, :128, :].std(axis=-1) > 0)  # no other flat channel


def test_a_few_noisy_channels_per_subject(c2_subjects):
    for s in c2_subjects:
        noisy = _noisy_channels(s)
        assert 2 <= len(noisy) <= 4, (s["id"], noisy)
        # Bad electrodes stay bad: in every window the noisy channels are above the median.
        win_pow = _band(s["freqs"], s["psd_windows"][:, :N_EEG], 1.0, 45.0)
        assert np.all(win_pow[:, noisy] > 2.0 * np.median(win_pow, axis=1, keepdims=True))


# --- learnability -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["externalizing", "p_factor"])
def test_challenge2_target_follows_alpha(c2_subjects, target):
    assert all(s["targets_constant"] for s in c2_subjects)  # subject-level trait
    pairs = np.array([(s[target], _rel_alpha(s)) for s in c2_subjects if np.isfinite(s[target])])
    assert len(pairs) >= 18
    r = np.corrcoef(pairs.T)[0, 1]
    assert abs(r) >= 0.8, r
    assert abs(r) < 0.995, r  # some noise is left: not a deterministic function


def test_subject_traits_are_stable_across_windows(c2_subjects):
    """Per-window relative alpha varies less within subjects than between them (ICC > 0.6)."""
    per_window = []
    for s in c2_subjects:
        p = s["psd_windows"][:, _ordinary(s)]
        rel = np.log10(_band(s["freqs"], p, 8, 13) / _band(s["freqs"], p, 1, 40)).mean(axis=1)
        per_window.append(rel)
    within = np.mean([w.var(ddof=1) for w in per_window])
    between = np.var([w.mean() for w in per_window], ddof=1)
    assert between / (between + within) > 0.6


def test_challenge1_response_time_follows_window_alpha(demo):
    """Within-subject Pearson r between RT and that window's own log alpha power.

    The generator makes RT linear in the trial's latent log alpha power (r about 0.85 on the
    latent); a 2 s window only estimates that power from a few spectral bins, which lowers the
    observed r to about 0.6-0.75. 0.5 leaves margin and is still far from chance: with ~380
    windows, |r| >= 0.5 has p < 1e-20 under no relation.
    """
    rts, alphas = [], []
    for path in demo.challenge1.values():
        with h5py.File(path, "r") as f:
            x, rt, ids = f["eeg"][()], f["labels"][()], f["subject_ids"][()]
        for sid in dict.fromkeys(ids):
            sel = ids == sid
            freqs, psd = welch(x[sel, :N_EEG].astype(np.float64) * 1e6, fs=SFREQ, nperseg=100)
            log_alpha = np.log10(_band(freqs, psd, 8.0, 13.0)).mean(axis=1)  # (n_windows,)
            rts.append(rt[sel] - rt[sel].mean())
            alphas.append(log_alpha - log_alpha.mean())
    r = np.corrcoef(np.concatenate(rts), np.concatenate(alphas))[0, 1]
    assert r >= 0.5, r


# --- determinism, independence, atomicity --------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path):
    a = write_demo_data(tmp_path / "a", seed=3, **TINY_KW)
    time.sleep(1.1)  # HDF5 object times have 1 s resolution: a stored time would differ now
    b = write_demo_data(tmp_path / "b", seed=3, **TINY_KW)
    names = sorted(p.name for p in a.out_dir.iterdir())
    assert names == sorted(p.name for p in b.out_dir.iterdir())
    for name in names:
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    before = {p.name: p.read_bytes() for p in a.out_dir.iterdir()}
    write_demo_data(tmp_path / "a", seed=3, **TINY_KW)  # rerun in place: same bytes
    assert {p.name: p.read_bytes() for p in a.out_dir.iterdir()} == before
    c = write_demo_data(tmp_path / "c", seed=4, **TINY_KW)
    assert (c.challenge2["R1"]).read_bytes() != (a.challenge2["R1"]).read_bytes()
    assert c.subjects != a.subjects


def test_subject_data_does_not_depend_on_other_subjects(tmp_path):
    kw = dict(seed=5, c2_windows_per_subject=2, c1_windows_per_subject=2, progress=False)
    small = write_demo_data(tmp_path / "small", subjects_per_release=2, releases=("R2",), **kw)
    big = write_demo_data(tmp_path / "big", subjects_per_release=4, **kw)
    assert big.subjects["R2"][:2] == small.subjects["R2"]
    with h5py.File(small.challenge2["R2"], "r") as fs, h5py.File(big.challenge2["R2"], "r") as fb:
        np.testing.assert_array_equal(fs["data"][()], fb["data"][:4])
    with h5py.File(small.challenge1["R2"], "r") as fs, h5py.File(big.challenge1["R2"], "r") as fb:
        np.testing.assert_array_equal(fs["eeg"][()], fb["eeg"][:4])
        np.testing.assert_array_equal(fs["labels"][()], fb["labels"][:4])


def test_interrupted_run_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    first = write_demo_data(out, seed=1, **TINY_KW)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    calls = {"n": 0}
    real = se.synthesize_windows

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # in the middle of the first file
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(se, "synthesize_windows", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        write_demo_data(out, seed=2, **TINY_KW)
    # The old complete files are untouched and no temporary file is left behind.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh"
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="injected failure"):
        write_demo_data(fresh, seed=2, **TINY_KW)
    assert list(fresh.iterdir()) == []
    assert first.files


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subjects_per_release": 0}, "subjects_per_release"),
        ({"c2_windows_per_subject": 0}, "c2_windows_per_subject"),
        ({"releases": ("R1", "R1")}, "unique"),
        ({"releases": ("../R1",)}, "file name"),
        ({"compression_level": 10}, "compression_level"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_rejected_before_writing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_demo_data(tmp_path / "out", **{**TINY_KW, **kwargs})
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file_is_rejected(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        write_demo_data(target, **TINY_KW)


def test_synthesize_windows_rejects_bad_shape():
    model = se.draw_subject(np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_windows"):
        se.synthesize_windows(model, np.random.default_rng(0), 0, 400)


def test_noise_from_spectrum_has_requested_variance():
    power = se.aperiodic_spectrum(400, SFREQ, 1.5)
    x = se.noise_from_spectrum(np.random.default_rng(0), power, (400, 16), 400)
    assert x.shape == (400, 16, 400)
    assert abs(x.var() - 1.0) < 0.05
    freqs, psd = welch(x, fs=SFREQ, nperseg=400, axis=-1)
    ratio = psd.mean(axis=(0, 1))[8] / psd.mean(axis=(0, 1))[80]  # 2 Hz vs 20 Hz
    assert 10 ** (1.5 * 1) * 0.7 < ratio < 10 ** (1.5 * 1) * 1.4


# --- CLI --------------------------------------------------------------------------------------


def test_cli_writes_and_reports(tmp_path):
    out = tmp_path / "demo"
    args = [
        "demo-data",
        "--out",
        str(out),
        "--seed",
        "2",
        "--subjects-per-release",
        "2",
        "--c2-windows",
        "2",
        "--c1-windows",
        "3",
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in (
        "challenge2_R1.h5",
        "challenge2_R2.h5",
        "challenge1_R1.h5",
        "challenge1_R2.h5",
        "participants.tsv",
    ):
        assert (out / name).is_file()
        assert name in result.output
    assert re.search(r"challenge1_R1\.h5\s+6 windows\s+2 subjects", result.output)
    assert "synthetic" in result.output


def test_cli_default_out_is_settings_demo_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    data_dir = tmp_path / "mydata"
    args = [
        "demo-data",
        "--subjects-per-release",
        "1",
        "--c2-windows",
        "1",
        "--c1-windows",
        "1",
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args, env={"EEGFS_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    assert (data_dir / "demo" / "challenge2_R1.h5").is_file()


def test_cli_rejects_bad_options(tmp_path):
    result = CliRunner().invoke(cli, ["demo-data", "--out", str(tmp_path), "--seed", "-3"])
    assert result.exit_code == 2
    assert "--seed" in result.output
