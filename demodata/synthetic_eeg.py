"""Pure NumPy/SciPy generators of EEG2025-like synthetic EEG (no I/O).

The demo data of :mod:`demodata.writer` is built from these kernels. Everything here is a
function of a :class:`numpy.random.Generator` and plain numbers, so one subject's data depends only
on that subject's generator, never on how many other subjects are generated.

Signal model for one subject (all EEG channels except the last, which is the flat Cz reference)::

    x_c(t) = A * g_c * ( sqrt(1 - q_c) * bg_c(t) + sqrt(q_c) * exp(a_w / 2) * alpha_c(t) )

* ``bg_c``: unit-variance aperiodic (1/f^chi) background, a mix of ``N_LATENT_SOURCES`` latent
  sources spread through a smooth random mixing matrix (spatial correlation between neighbouring
  electrodes) and an independent per-channel part.
* ``alpha_c``: unit-variance alpha rhythm (Gaussian spectral peak at the subject's alpha frequency),
  a mix of ``N_ALPHA_SOURCES`` sources, so alpha is correlated across channels.
* ``q_c``: the alpha share of channel power, solved (:func:`alpha_share`) so that the channel's
  expected relative alpha power, 8-13 Hz over 1-40 Hz, equals ``R * w_c``: ``w_c`` is a
  posterior-weighted topography (mean 1) and ``log10 R`` is linear in the subject's latent
  general factor. This is the trait that the Challenge 2 targets follow; solving for ``q_c``
  removes the part of the relation that would otherwise depend on the aperiodic exponent and the
  alpha frequency, so the relation stays log-linear.
* ``a_w``: trial-level (per window) log alpha power fluctuation; the Challenge 1 response time is
  linear in it.
* ``A`` (uV) and ``g_c`` set the amplitude; a few channels per subject are made noisy.
* Every component is shaped by the magnitude response of a zero-phase 0.5-45 Hz Butterworth
  band-pass, as the EEG2025 preprocessing (0.5-50 Hz band-pass, resampling to 100 Hz) leaves it.

Noise is drawn in the frequency domain (complex Gaussian coefficients scaled by the square root
of the power spectrum, then one inverse real FFT), vectorised over windows x sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sp_signal

#: Sampling rate of the EEG2025 caches (Hz).
SFREQ = 100.0
#: HBN EGI montage: E1..E128 plus Cz (the recording reference, flat) as channel 129.
N_CHANNELS = 129
#: Latent background sources mixed into the channels (spatial correlation).
N_LATENT_SOURCES = 12
#: Alpha sources mixed into the channels.
N_ALPHA_SOURCES = 4
#: Share of background variance that comes from the spatially mixed latent sources.
LATENT_SHARE = 0.6
#: Zero-phase band-pass applied to every component (Hz).
BANDPASS_HZ = (0.5, 45.0)
#: log10 of the subject's relative alpha power (8-13 Hz / 1-40 Hz) = a + b * general factor.
RELATIVE_ALPHA_LOG10 = (-0.48, -0.14)
#: Bands of the relative alpha power that the traits set (Hz).
ALPHA_BAND = (8.0, 13.0)
TOTAL_BAND = (1.0, 40.0)
#: Alphabet of the 8 characters after "NDAR" in a subject id.
ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))

NOISY_KINDS = ("broadband", "high-frequency")


@dataclass(frozen=True, eq=False)
class SubjectModel:
    """Traits and head model of one synthetic subject.

    Scores (``p_factor``, ``attention``, ``internalizing``, ``externalizing``) are standardised
    factor scores like HBN's; all four load on ``general_factor``, which also sets the alpha share
    ``relative_alpha``. Arrays have one entry per EEG channel (``n_channels - 1``; Cz excluded).
    """

    subject_id: str
    sex: str
    age: float
    ehq_total: float
    general_factor: float
    p_factor: float
    attention: float
    internalizing: float
    externalizing: float
    amplitude_uv: float
    aperiodic_exponent: float
    alpha_freq_hz: float
    alpha_width_hz: float
    relative_alpha: float  # expected 8-13 Hz / 1-40 Hz power, channel mean
    rt_base_s: float
    channel_gain: np.ndarray  # (n_eeg,)
    alpha_weight: np.ndarray  # (n_eeg,), mean 1
    latent_mixing: np.ndarray  # (n_eeg, N_LATENT_SOURCES), unit-norm rows
    alpha_mixing: np.ndarray  # (n_eeg, N_ALPHA_SOURCES), unit-norm rows
    noisy_channels: tuple[int, ...]
    noisy_kinds: tuple[str, ...]
    noisy_scales: tuple[float, ...]

    @property
    def n_channels(self) -> int:
        """Channels including the flat reference."""
        return self.channel_gain.shape[0] + 1


@dataclass(frozen=True, eq=False)
class WindowBatch:
    """Windows of one subject.

    Attributes
    ----------
    data : ndarray, shape (n_windows, n_channels, n_times), float32
        EEG in volts; the last channel (Cz reference) is all zeros.
    alpha_log_power : ndarray, shape (n_windows,)
        Trial-level fluctuation ``a_w`` of alpha power (natural log of the power multiplier).
    """

    data: np.ndarray
    alpha_log_power: np.ndarray


# --- montage ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def electrode_positions(n_eeg: int) -> np.ndarray:
    """Unit vectors of ``n_eeg`` electrodes spread evenly over the upper hemisphere.

    A Fibonacci lattice (deterministic, no randomness); +y is anterior, +z the vertex. Good
    enough to give neighbouring channels correlated signals and a posterior alpha topography.

    Returns
    -------
    ndarray, shape (n_eeg, 3)
    """
    i = np.arange(n_eeg) + 0.5
    z = 1.0 - i / n_eeg  # upper hemisphere, z in (0, 1)
    r = np.sqrt(1.0 - z**2)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    pos = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    pos.setflags(write=False)
    return pos


def _random_points_upper_hemisphere(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    v[:, 2] = np.abs(v[:, 2])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _smooth_mixing(
    rng: np.random.Generator, pos: np.ndarray, n_sources: int, width: float, signed: bool
) -> np.ndarray:
    """Mixing matrix (n_eeg, n_sources) of Gaussian spatial kernels, rows scaled to unit norm."""
    src = _random_points_upper_hemisphere(rng, n_sources)
    d2 = ((pos[:, None, :] - src[None, :, :]) ** 2).sum(-1)
    mix = np.exp(-d2 / (2.0 * width**2))
    if signed:
        mix *= rng.choice([-1.0, 1.0], size=n_sources)
    mix += 0.05 * rng.standard_normal(mix.shape)
    if not signed:
        mix = np.abs(mix)
    return mix / np.linalg.norm(mix, axis=1, keepdims=True)


# --- subject traits ---------------------------------------------------------------------------


def make_subject_id(rng: np.random.Generator) -> str:
    """An HBN-like GUID without the ``sub-`` prefix: ``"NDAR"`` + 8 uppercase alphanumerics."""
    return "NDAR" + "".join(rng.choice(ID_ALPHABET, size=8))


def draw_subject(rng: np.random.Generator, *, n_channels: int = N_CHANNELS) -> SubjectModel:
    """Draw one subject's id, demographics, scores and head model.

    Parameters
    ----------
    rng : numpy.random.Generator
        The subject's own generator (draws happen in a fixed order).
    n_channels : int
        Channels including the flat reference (129 for HBN).
    """
    if n_channels < 2:
        raise ValueError(f"n_channels must be >= 2 (EEG channels + reference), got {n_channels}")
    n_eeg = n_channels - 1
    subject_id = make_subject_id(rng)
    sex = "M" if rng.random() < 0.6 else "F"
    age = float(rng.uniform(5.0, 21.0))
    ehq_total = float(np.clip(rng.normal(60.0, 45.0), -100.0, 100.0))

    # Scores: one general factor plus specific parts (all standardised-ish, HBN-like scale).
    g = float(np.clip(rng.standard_normal(), -2.3, 2.3))
    spec = rng.standard_normal(4)
    p_factor = g + 0.12 * spec[0]
    externalizing = 0.95 * g + 0.2 * spec[1]
    attention = 0.8 * g + 0.6 * spec[2]
    internalizing = 0.7 * g + 0.7 * spec[3]

    # Spectral traits. Relative alpha power falls with the general factor (log-linear, from about
    # 0.7 at g = -2.3 to 0.16 at g = +2.3); alpha frequency rises and amplitude falls with age.
    relative_alpha = float(10.0 ** (RELATIVE_ALPHA_LOG10[0] + RELATIVE_ALPHA_LOG10[1] * g))
    alpha_freq = float(
        np.clip(10.0 + 0.08 * (age - 13.0) + 0.25 * rng.standard_normal(), 9.0, 11.5)
    )
    alpha_width = float(rng.uniform(0.8, 1.1))
    exponent = float(rng.uniform(1.4, 1.8))
    amplitude = float(
        np.clip(16.0 * np.exp(-0.02 * (age - 13.0) + 0.25 * rng.standard_normal()), 8.0, 32.0)
    )
    rt_base = float(
        np.clip(
            1.3 - 0.02 * (age - 13.0) + 0.06 * attention + 0.08 * rng.standard_normal(), 0.6, 2.2
        )
    )

    # Head model.
    pos = electrode_positions(n_eeg)
    channel_gain = np.clip(np.exp(0.1 * rng.standard_normal(n_eeg)), 0.78, 1.28)
    alpha_weight = (0.75 + 0.25 * (1.0 - pos[:, 1])) * np.exp(0.05 * rng.standard_normal(n_eeg))
    alpha_weight /= alpha_weight.mean()
    latent_mixing = _smooth_mixing(rng, pos, N_LATENT_SOURCES, width=0.45, signed=True)
    alpha_mixing = _smooth_mixing(rng, pos, N_ALPHA_SOURCES, width=0.6, signed=False)

    n_noisy = int(rng.integers(2, 5))
    noisy = tuple(
        sorted(int(c) for c in rng.choice(n_eeg, size=min(n_noisy, n_eeg), replace=False))
    )
    kinds = tuple(str(k) for k in rng.choice(NOISY_KINDS, size=len(noisy)))
    scales = tuple(float(s) for s in rng.uniform(3.5, 5.5, size=len(noisy)))

    return SubjectModel(
        subject_id=subject_id,
        sex=sex,
        age=age,
        ehq_total=ehq_total,
        general_factor=g,
        p_factor=float(p_factor),
        attention=float(attention),
        internalizing=float(internalizing),
        externalizing=float(externalizing),
        amplitude_uv=amplitude,
        aperiodic_exponent=exponent,
        alpha_freq_hz=alpha_freq,
        alpha_width_hz=alpha_width,
        relative_alpha=relative_alpha,
        rt_base_s=rt_base,
        channel_gain=channel_gain,
        alpha_weight=alpha_weight,
        latent_mixing=latent_mixing,
        alpha_mixing=alpha_mixing,
        noisy_channels=noisy,
        noisy_kinds=kinds,
        noisy_scales=scales,
    )


# --- spectra ----------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def bandpass_gain(n_times: int, sfreq: float = SFREQ) -> np.ndarray:
    """Power gain of a zero-phase 4th-order Butterworth band-pass at the rFFT frequencies.

    Zero-phase (forward-backward) filtering squares the magnitude response, so the power gain is
    ``|H(f)|**4``. The upper edge is ``BANDPASS_HZ[1]`` or 0.45 * sfreq, whichever is lower.

    Returns
    -------
    ndarray, shape (n_times // 2 + 1,)
    """
    freqs = sp_fft.rfftfreq(n_times, 1.0 / sfreq)
    lo, hi = BANDPASS_HZ[0], min(BANDPASS_HZ[1], 0.45 * sfreq)
    sos = sp_signal.butter(4, [lo, hi], btype="bandpass", fs=sfreq, output="sos")
    _, h = sp_signal.freqz_sos(sos, worN=freqs, fs=sfreq)
    gain = np.abs(h) ** 4
    gain.setflags(write=False)
    return gain


def _unit_variance(power: np.ndarray, n_times: int) -> np.ndarray:
    """Scale a one-sided power spectrum so that ortho-normalised irfft noise has variance 1."""
    w = np.full(power.shape[-1], 2.0)
    w[0] = 1.0
    if n_times % 2 == 0:
        w[-1] = 1.0
    return power / ((power * w).sum(-1, keepdims=True) / n_times)


def aperiodic_spectrum(n_times: int, sfreq: float, exponent: float) -> np.ndarray:
    """Band-passed ``1/f**exponent`` power spectrum, scaled to unit signal variance.

    Returns
    -------
    ndarray, shape (n_times // 2 + 1,)
    """
    freqs = sp_fft.rfftfreq(n_times, 1.0 / sfreq)
    power = np.zeros_like(freqs)
    power[1:] = freqs[1:] ** -exponent
    return _unit_variance(power * bandpass_gain(n_times, sfreq), n_times)


def alpha_spectrum(n_times: int, sfreq: float, peak_hz: float, width_hz: float) -> np.ndarray:
    """Band-passed Gaussian spectral peak (alpha rhythm), scaled to unit signal variance."""
    freqs = sp_fft.rfftfreq(n_times, 1.0 / sfreq)
    power = np.exp(-0.5 * ((freqs - peak_hz) / width_hz) ** 2)
    return _unit_variance(power * bandpass_gain(n_times, sfreq), n_times)


def highfreq_spectrum(n_times: int, sfreq: float, low_hz: float = 20.0) -> np.ndarray:
    """Flat spectrum above ``low_hz`` (muscle-like, no line noise), band-passed, unit variance."""
    freqs = sp_fft.rfftfreq(n_times, 1.0 / sfreq)
    power = 1.0 / (1.0 + (low_hz / np.maximum(freqs, 1e-6)) ** 8)
    return _unit_variance(power * bandpass_gain(n_times, sfreq), n_times)


def noise_from_spectrum(
    rng: np.random.Generator, power: np.ndarray, shape: tuple[int, ...], n_times: int
) -> np.ndarray:
    """Gaussian noise with a given one-sided power spectrum, drawn in the frequency domain.

    Parameters
    ----------
    rng : numpy.random.Generator
    power : ndarray, shape (n_times // 2 + 1,)
        Power per rFFT bin, as returned by :func:`aperiodic_spectrum` (unit variance).
    shape : tuple of int
        Leading shape of the output, e.g. (n_windows, n_sources).
    n_times : int

    Returns
    -------
    ndarray, shape (*shape, n_times), float64
        Stationary, circular noise whose variance is ``(power * w).sum() / n_times`` (1 for the
        normalised spectra here).
    """
    n_freqs = n_times // 2 + 1
    coef = rng.standard_normal((*shape, n_freqs, 2))
    amp = np.sqrt(power / 2.0)
    spec = (coef[..., 0] + 1j * coef[..., 1]) * amp
    # DC and (for even n_times) Nyquist coefficients are real with the full bin power.
    spec[..., 0] = coef[..., 0, 0] * np.sqrt(power[0])
    if n_times % 2 == 0:
        spec[..., -1] = coef[..., -1, 0] * np.sqrt(power[-1])
    return sp_fft.irfft(spec, n=n_times, axis=-1, norm="ortho")


def alpha_share(model: SubjectModel, sfreq: float = SFREQ) -> np.ndarray:
    """Alpha share of each channel's variance that gives it relative alpha ``R * w_c``.

    With unit-variance background and alpha spectra ``b`` and ``a``, a channel mixing them with
    share ``q`` has relative power ``(q a1 + (1-q) b1) / (q a2 + (1-q) b2)``, where ``*1`` is the
    power in ``ALPHA_BAND`` and ``*2`` in ``TOTAL_BAND``; solved for ``q`` on a 0.25 Hz grid
    (so it is the same for 2 s and 4 s windows).

    Returns
    -------
    ndarray, shape (n_eeg,)
        Shares in [0.01, 0.9].
    """
    n_ref = int(round(4.0 * sfreq))
    freqs = sp_fft.rfftfreq(n_ref, 1.0 / sfreq)
    in_alpha = (freqs >= ALPHA_BAND[0]) & (freqs <= ALPHA_BAND[1])
    in_total = (freqs >= TOTAL_BAND[0]) & (freqs <= TOTAL_BAND[1])
    b = aperiodic_spectrum(n_ref, sfreq, model.aperiodic_exponent)
    a = alpha_spectrum(n_ref, sfreq, model.alpha_freq_hz, model.alpha_width_hz)
    a1, a2, b1, b2 = a[in_alpha].sum(), a[in_total].sum(), b[in_alpha].sum(), b[in_total].sum()
    r = model.relative_alpha * model.alpha_weight
    q = (r * b2 - b1) / (a1 - b1 - r * (a2 - b2))
    return np.clip(q, 0.01, 0.9)


# --- windows ----------------------------------------------------------------------------------


def synthesize_windows(
    model: SubjectModel,
    rng: np.random.Generator,
    n_windows: int,
    n_times: int,
    *,
    sfreq: float = SFREQ,
    alpha_fluctuation_sd: float = 0.3,
) -> WindowBatch:
    """Windows of one subject's EEG.

    Parameters
    ----------
    model : SubjectModel
        Traits and head model (stable across windows).
    rng : numpy.random.Generator
        Generator for this batch (phases, noise, trial-level alpha fluctuation).
    n_windows, n_times : int
        Output shape; windows are independent stretches of n_times samples.
    sfreq : float
        Sampling rate in Hz.
    alpha_fluctuation_sd : float
        Standard deviation of the trial-level log alpha power ``a_w``.

    Returns
    -------
    WindowBatch
        ``data`` (n_windows, n_channels, n_times) float32 in volts, Cz (last channel) all zeros,
        and ``alpha_log_power`` (n_windows,).
    """
    if n_windows < 1 or n_times < 8:
        raise ValueError(f"need n_windows >= 1 and n_times >= 8, got {n_windows}, {n_times}")
    n_eeg = model.channel_gain.shape[0]

    bg_power = aperiodic_spectrum(n_times, sfreq, model.aperiodic_exponent)
    latent = noise_from_spectrum(rng, bg_power, (n_windows, N_LATENT_SOURCES), n_times)
    local = noise_from_spectrum(rng, bg_power, (n_windows, n_eeg), n_times)
    background = np.sqrt(LATENT_SHARE) * np.matmul(model.latent_mixing, latent)
    background += np.sqrt(1.0 - LATENT_SHARE) * local

    a_power = alpha_spectrum(n_times, sfreq, model.alpha_freq_hz, model.alpha_width_hz)
    alpha_src = noise_from_spectrum(rng, a_power, (n_windows, N_ALPHA_SOURCES), n_times)
    alpha = np.matmul(model.alpha_mixing, alpha_src)
    a_w = alpha_fluctuation_sd * rng.standard_normal(n_windows)

    q = alpha_share(model, sfreq)[None, :, None]
    eeg = np.sqrt(1.0 - q) * background
    eeg += np.sqrt(q) * np.exp(a_w / 2.0)[:, None, None] * alpha
    eeg *= (model.amplitude_uv * model.channel_gain)[None, :, None]

    if model.noisy_channels:
        hf = noise_from_spectrum(
            rng, highfreq_spectrum(n_times, sfreq), (n_windows, len(model.noisy_channels)), n_times
        )
        for j, (ch, kind, scale) in enumerate(
            zip(model.noisy_channels, model.noisy_kinds, model.noisy_scales, strict=True)
        ):
            if kind == "broadband":
                eeg[:, ch] *= scale
            else:
                eeg[:, ch] += scale * model.amplitude_uv * hf[:, j]

    data = np.zeros((n_windows, n_eeg + 1, n_times), dtype=np.float32)
    data[:, :n_eeg] = eeg * 1e-6  # uV -> V
    return WindowBatch(data=data, alpha_log_power=a_w)


def response_times(
    model: SubjectModel,
    alpha_log_power: np.ndarray,
    rng: np.random.Generator,
    *,
    slope_s: float = 0.25,
    noise_sd_s: float = 0.07,
) -> np.ndarray:
    """Challenge 1 response time per window (s): slower when the trial's alpha power is higher.

    ``rt = rt_base + slope_s * a_w + N(0, noise_sd_s)``, clipped to [0.2, 3.0] s.

    Parameters
    ----------
    alpha_log_power : ndarray, shape (n_windows,)
        ``WindowBatch.alpha_log_power`` of the same windows.

    Returns
    -------
    ndarray, shape (n_windows,), float32, seconds
    """
    rt = model.rt_base_s + slope_s * alpha_log_power
    rt = rt + noise_sd_s * rng.standard_normal(alpha_log_power.shape[0])
    return np.clip(rt, 0.2, 3.0).astype(np.float32)
