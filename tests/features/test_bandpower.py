"""The band-power kernel against independent computations (scipy.signal.welch, MNE)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from features_testlib import eeg_like

from pipelines.bandpower import (
    DEFAULT_BANDS,
    BandpowerParams,
    WelchPlan,
    compute_bandpower,
    unit_scale_to_uv,
    window_quality,
)


def _reference(x_volts: np.ndarray, sfreq: float, bands=DEFAULT_BANDS, nperseg=None):
    """Band powers from scipy.signal.welch in float64 (the documented recipe)."""
    nperseg = nperseg or int(sfreq)
    f, psd = scipy.signal.welch(
        x_volts.astype(np.float64) * 1e6,
        fs=sfreq,
        window="hann",
        nperseg=nperseg,
        noverlap=nperseg // 2,
        detrend="constant",
        scaling="density",
        average="mean",
        axis=-1,
    )
    df = f[1] - f[0]
    abs_p = np.stack([psd[..., (f >= lo) & (f < hi)].sum(-1) * df for _, lo, hi in bands], -1)
    lo, hi = min(b[1] for b in bands), max(b[2] for b in bands)
    tot = psd[..., (f >= lo) & (f < hi)]
    p = tot / tot.sum(-1, keepdims=True)
    ent = -(p * np.log(p)).sum(-1) / np.log(p.shape[-1])
    return abs_p, abs_p / (tot.sum(-1)[..., None] * df), ent


@pytest.mark.parametrize("n_times", [200, 400, 251])
def test_matches_scipy_welch_to_1e5(n_times):
    x = eeg_like(np.random.default_rng(1), (6, 16, n_times))
    r = compute_bandpower(x, 100.0)
    abs_ref, rel_ref, ent_ref = _reference(x, 100.0)
    np.testing.assert_allclose(r.abs_power, abs_ref, rtol=1e-5)
    np.testing.assert_allclose(r.rel_power, rel_ref, rtol=1e-5)
    # log10 of a 1e-5-relative power error is an absolute error of 1e-5 / ln(10)
    np.testing.assert_allclose(r.log_abs_power, np.log10(abs_ref), rtol=0, atol=1e-5 / np.log(10))
    np.testing.assert_allclose(r.spectral_entropy, ent_ref, rtol=1e-5)


def test_other_rate_and_bands_match_scipy():
    bands = (("low", 2.0, 10.0), ("high", 10.0, 60.0))
    x = eeg_like(np.random.default_rng(2), (4, 8, 512), sfreq=256.0)
    params = BandpowerParams(bands=bands, segment_s=0.5)
    r = compute_bandpower(x, 256.0, params)
    abs_ref, rel_ref, _ = _reference(x, 256.0, bands, nperseg=128)
    np.testing.assert_allclose(r.abs_power, abs_ref, rtol=1e-5)
    np.testing.assert_allclose(r.rel_power, rel_ref, rtol=1e-5)


def test_matches_mne_psd_array_welch():
    import mne  # in the [dev] extra that `make test` installs: a missing MNE fails, never skips

    x = eeg_like(np.random.default_rng(3), (2, 4, 200))
    psd, f = mne.time_frequency.psd_array_welch(
        x.astype(np.float64) * 1e6,
        sfreq=100.0,
        fmin=0,
        fmax=50,
        n_fft=100,
        n_per_seg=100,
        n_overlap=50,
        window="hann",
        average="mean",
        n_jobs=1,
        verbose=False,
    )
    abs_mne = np.stack([psd[..., (f >= lo) & (f < hi)].sum(-1) for _, lo, hi in DEFAULT_BANDS], -1)
    np.testing.assert_allclose(compute_bandpower(x, 100.0).abs_power, abs_mne, rtol=1e-5)


def test_relative_powers_sum_to_one_and_entropy_in_unit_interval():
    r = compute_bandpower(eeg_like(np.random.default_rng(4), (5, 10, 200)), 100.0)
    np.testing.assert_allclose(r.rel_power.sum(-1), 1.0, rtol=1e-5)
    assert np.all((r.spectral_entropy >= 0) & (r.spectral_entropy <= 1))
    assert r.abs_power.dtype == np.float32 and r.abs_power.shape == (5, 10, 5)


def test_units_are_microvolts_squared():
    """A 10 Hz sine of amplitude 10 uV has alpha power 50 uV^2 (A^2 / 2)."""
    t = np.arange(400) / 100.0
    x = (10e-6 * np.sin(2 * np.pi * 10 * t)).astype(np.float32)[None, None, :]
    r = compute_bandpower(x, 100.0)
    assert r.abs_power[0, 0, 2] == pytest.approx(50.0, rel=1e-3)
    assert r.log_abs_power[0, 0, 2] == pytest.approx(np.log10(50.0), rel=1e-3)
    r_uv = compute_bandpower(x * 1e6, 100.0, to_uv=unit_scale_to_uv("uV"))
    np.testing.assert_allclose(r_uv.abs_power, r.abs_power, rtol=1e-5)


def test_flat_channel_gives_nan_relative_power_and_flag_but_reference_keeps_window_good():
    x = eeg_like(np.random.default_rng(5), (3, 6, 200))
    x[:, 5] = 0.0  # reference channel: flat in every window
    x[1, 2] = 1e-9  # another channel flat in window 1 (0.001 uV)
    r = compute_bandpower(x, 100.0)
    assert r.flat[:, 5].all() and r.flat[1, 2] and r.flat.sum() == 4
    assert np.isnan(r.rel_power[:, 5]).all() and np.isnan(r.rel_power[1, 2]).all()
    assert np.isnan(r.log_abs_power[1, 2]).all() and np.isnan(r.spectral_entropy[1, 2])
    assert np.isfinite(r.rel_power[0, :5]).all()
    ref = np.array([False] * 5 + [True])
    n_flat, good = window_quality(r, ref, max_flat_fraction=0.0)
    assert n_flat.tolist() == [0, 1, 0]
    assert good.tolist() == [True, False, True]


def test_nonfinite_window_is_nan_and_flagged_never_zero():
    x = eeg_like(np.random.default_rng(6), (3, 4, 200))
    x[2, 1, 17] = np.nan
    x[0, 3, 0] = np.inf
    r = compute_bandpower(x, 100.0)
    assert r.nonfinite.tolist() == [True, False, True]
    for arr in (r.abs_power, r.rel_power, r.log_abs_power):
        assert np.isnan(arr[[0, 2]]).all() and np.isfinite(arr[1]).all()
    assert window_quality(r, np.zeros(4, bool))[1].tolist() == [False, True, False]


def test_parameter_validation_names_the_problem():
    with pytest.raises(ValueError, match="Nyquist"):
        WelchPlan(BandpowerParams(bands=(("hi", 30.0, 80.0),)), 100.0, 200)
    with pytest.raises(ValueError, match="shorter than one Welch segment"):
        WelchPlan(BandpowerParams(), 100.0, 50)
    with pytest.raises(ValueError, match="no frequency bin"):
        WelchPlan(BandpowerParams(bands=(("narrow", 10.2, 10.6),)), 100.0, 200)
    with pytest.raises(ValueError, match="lo < hi"):
        BandpowerParams(bands=(("bad", 5.0, 5.0),))
    with pytest.raises(ValueError, match="unknown unit"):
        unit_scale_to_uv("furlongs")


def test_plan_documents_default_welch_geometry():
    plan = WelchPlan(BandpowerParams(), 100.0, 200)
    assert (plan.nperseg, plan.noverlap, plan.n_segments, plan.df) == (100, 50, 3, 1.0)
    assert plan.bins.tolist() == list(range(1, 45))


def test_total_power_is_the_1_45_hz_power_of_scipy_welch():
    """The quality gate's input: power in the total range per window and channel (uV^2)."""
    x = eeg_like(np.random.default_rng(5), (3, 8, 400))
    x[1, 2, 17] = np.nan
    r = compute_bandpower(x, 100.0)
    abs_ref, rel_ref, _ = _reference(np.nan_to_num(x), 100.0)
    expected = abs_ref.sum(-1)  # the default bands tile [1, 45) Hz
    np.testing.assert_allclose(r.total_power[[0, 2]], expected[[0, 2]], rtol=1e-5)
    assert np.isnan(r.total_power[1]).all() and r.total_power.dtype == np.float32
    flat = compute_bandpower(np.zeros((1, 2, 400), np.float32), 100.0)
    assert flat.flat.all() and (flat.total_power == 0).all()
