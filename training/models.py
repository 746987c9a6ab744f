"""Models: a compact 1-D CNN with a feature-fusion head, and EEGNeX.

Every model here is called as ``model(x, features)``:

* ``x``: float tensor (batch, n_chans, n_times), normalised EEG;
* ``features``: float tensor (batch, 2 * n_features) = standardised subject features (0 where
  missing) followed by their 0/1 availability mask, or ``None`` when the run uses no features.

and returns (batch, n_outputs).

EEGNeX follows Chen et al. (2024), "Toward reliable signals decoding for electroencephalogram: A
benchmark study to EEGNeX", Biomedical Signal Processing and Control 87, 105475, in the
configuration braindecode ships (8/32 filters, depth multiplier 2, kernels 64 and 16, dilations 2
and 4, max-norm 1.0 on the depthwise conv and 0.25 on the classifier): 62,353 parameters for
129 channels x 200 samples and one output. braindecode's own class is used when it is importable;
it cannot be installed beside the pinned torch here (it needs torchaudio), hence the copy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODEL_NAMES = ("cnn", "eegnex")

#: Added to powers before the log (inputs are normalised to about unit variance).
_LOG_EPS = 1e-4


class _MaxNorm:
    """Mixin: the layer's per-output weight norm is clipped to ``max_norm`` before each use."""

    def __init__(self, *args, max_norm: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_norm = max_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.weight.copy_(torch.renorm(self.weight, p=2, dim=0, maxnorm=self.max_norm))
        return super().forward(x)


class _MaxNormConv2d(_MaxNorm, nn.Conv2d):
    def __init__(self, *args, max_norm: float = 1.0, **kwargs) -> None:
        super().__init__(*args, max_norm=max_norm, **kwargs)


class _MaxNormLinear(_MaxNorm, nn.Linear):
    def __init__(self, *args, max_norm: float = 0.25, **kwargs) -> None:
        super().__init__(*args, max_norm=max_norm, **kwargs)


def _pooled_length(n: int, kernel: int, padding: int) -> int:
    """Output length of AvgPool with stride = kernel (floor mode)."""
    return (n + 2 * padding - kernel) // kernel + 1


class EEGNeX(nn.Module):
    """EEGNeX (Chen et al. 2024) over raw windows.

    Parameters
    ----------
    n_chans, n_times : int
        Input shape (channels, samples).
    n_outputs : int
        Regression outputs.
    filter_1, filter_2, depth_multiplier, kernel_block_1_2, kernel_block_4, dilation_block_4,
    avg_pool_block4, kernel_block_5, dilation_block_5, avg_pool_block5, drop_prob,
    max_norm_conv, max_norm_linear
        Architecture hyper-parameters; defaults are the published configuration.

    Shapes: (B, C, T) -> block 1 (B, 8, C, T) -> block 2 (B, 32, C, T) -> depthwise spatial
    block 3 (B, 64, 1, T/4) -> dilated block 4 (B, 32, 1, T/4) -> block 5 (B, 8, 1, T/32) ->
    flatten -> linear (B, n_outputs).
    """

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        n_outputs: int = 1,
        *,
        filter_1: int = 8,
        filter_2: int = 32,
        depth_multiplier: int = 2,
        kernel_block_1_2: int = 64,
        kernel_block_4: int = 16,
        dilation_block_4: int = 2,
        avg_pool_block4: int = 4,
        kernel_block_5: int = 16,
        dilation_block_5: int = 4,
        avg_pool_block5: int = 8,
        drop_prob: float = 0.5,
        max_norm_conv: float = 1.0,
        max_norm_linear: float = 0.25,
    ) -> None:
        super().__init__()
        filter_3 = filter_2 * depth_multiplier
        self.block_1 = nn.Sequential(
            nn.Conv2d(1, filter_1, (1, kernel_block_1_2), padding="same", bias=False),
            nn.BatchNorm2d(filter_1),
        )
        self.block_2 = nn.Sequential(
            nn.Conv2d(filter_1, filter_2, (1, kernel_block_1_2), padding="same", bias=False),
            nn.BatchNorm2d(filter_2),
        )
        self.block_3 = nn.Sequential(
            _MaxNormConv2d(
                filter_2,
                filter_3,
                (n_chans, 1),
                groups=filter_2,
                bias=False,
                max_norm=max_norm_conv,
            ),
            nn.BatchNorm2d(filter_3),
            nn.ELU(),
            nn.AvgPool2d((1, avg_pool_block4), padding=(0, 1)),
            nn.Dropout(drop_prob),
        )
        self.block_4 = nn.Sequential(
            nn.Conv2d(
                filter_3,
                filter_2,
                (1, kernel_block_4),
                dilation=(1, dilation_block_4),
                padding="same",
                bias=False,
            ),
            nn.BatchNorm2d(filter_2),
        )
        self.block_5 = nn.Sequential(
            nn.Conv2d(
                filter_2,
                filter_1,
                (1, kernel_block_5),
                dilation=(1, dilation_block_5),
                padding="same",
                bias=False,
            ),
            nn.BatchNorm2d(filter_1),
            nn.ELU(),
            nn.AvgPool2d((1, avg_pool_block5), padding=(0, 1)),
            nn.Dropout(drop_prob),
            nn.Flatten(),
        )
        n_out_times = _pooled_length(
            _pooled_length(n_times, avg_pool_block4, 1), avg_pool_block5, 1
        )
        self.final_layer = _MaxNormLinear(
            filter_1 * n_out_times, n_outputs, max_norm=max_norm_linear
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (B, 1, C, T)
        x = self.block_1(x)
        x = self.block_2(x)
        x = self.block_3(x)
        x = self.block_4(x)
        x = self.block_5(x)
        return self.final_layer(x)


def make_eegnex(n_chans: int, n_times: int, n_outputs: int = 1) -> nn.Module:
    """braindecode's EEGNeX when importable, else :class:`EEGNeX` (same architecture)."""
    try:
        from braindecode.models import EEGNeX as BraindecodeEEGNeX
    except Exception:  # noqa: BLE001 - any import failure (missing, torchaudio mismatch) falls back
        return EEGNeX(n_chans, n_times, n_outputs)
    return BraindecodeEEGNeX(n_chans=n_chans, n_times=n_times, n_outputs=n_outputs)


def gabor_filter_bank(
    n_filters: int,
    kernel_size: int,
    sfreq: float,
    *,
    f_min: float = 2.0,
    f_max: float = 40.0,
    cycles: float = 0.7,
) -> torch.Tensor:
    """Unit-norm Gabor (Gaussian-windowed cosine) filters at log-spaced frequencies.

    Returns
    -------
    torch.Tensor, shape (n_filters, 1, kernel_size)
        Filter ``i`` is centred at ``f_min * (f_max / f_min) ** (i / (n_filters - 1))`` Hz (capped
        below Nyquist), with a Gaussian envelope of standard deviation ``cycles / f`` seconds (at
        most 0.2 s): band-passes of constant relative bandwidth, about as wide as the classical
        EEG bands for the default 0.7 cycles.
    """
    f_max = min(f_max, 0.45 * sfreq)
    t = (torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2) / sfreq
    if n_filters == 1:
        freqs = torch.tensor([f_min], dtype=torch.float64)
    else:
        freqs = torch.logspace(math.log10(f_min), math.log10(f_max), n_filters, dtype=torch.float64)
    bank = torch.empty(n_filters, 1, kernel_size, dtype=torch.float64)
    for i, f in enumerate(freqs.tolist()):
        sigma = min(0.2, cycles / f)
        w = torch.cos(2 * math.pi * f * t) * torch.exp(-0.5 * (t / sigma) ** 2)
        bank[i, 0] = w / w.norm()
    return bank.float()


class CompactCNN(nn.Module):
    """Compact 1-D CNN over the raw window, fused with the subject feature vector.

    The EEG branch is one temporal convolution shared by all channels (a learnable filter bank,
    initialised as Gabor band-passes from 2 to 40 Hz), whose output power per channel and filter
    is taken as a log ratio to the channel's total power (relative log band power: invariant to
    the channel's amplitude, which differs between subjects for reasons unrelated to the target),
    averaged over channels and batch-normalised. The fusion head is a linear layer on
    [EEG embedding, feature embedding]; the feature branch sees the standardised values and their
    availability mask, so "missing" is distinguishable from "equal to the training mean".

    Shapes: x (B, C, T) -> filtered (B*C, n_filters, T) -> relative log power (B, C, n_filters)
    -> channel mean (B, n_filters) -> head (B, n_outputs).

    Parameters
    ----------
    n_chans, n_times : int
        Input shape.
    n_outputs : int
    n_features : int
        Number of subject features (the forward pass takes ``2 * n_features`` values); 0 = none.
    sfreq : float
        Sampling rate (Hz), used to place the initial filter frequencies.
    n_filters, kernel_size, feature_hidden, drop_prob
        Size of the filter bank, its length in samples, the feature branch width, dropout.
    """

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        n_outputs: int = 1,
        n_features: int = 0,
        *,
        sfreq: float = 100.0,
        n_filters: int = 6,
        kernel_size: int = 49,
        feature_hidden: int = 16,
        drop_prob: float = 0.25,
    ) -> None:
        super().__init__()
        self.n_chans = n_chans
        self.n_features = n_features
        kernel_size = min(kernel_size, n_times - (1 - n_times % 2))
        self.filters = nn.Conv1d(1, n_filters, kernel_size, padding=kernel_size // 2, bias=False)
        with torch.no_grad():
            self.filters.weight.copy_(gabor_filter_bank(n_filters, kernel_size, sfreq))
        self.eeg_norm = nn.BatchNorm1d(n_filters)
        head_in = n_filters
        if n_features > 0 and feature_hidden > 0:
            self.feature_branch = nn.Sequential(
                nn.Linear(2 * n_features, feature_hidden),
                nn.ELU(),
                nn.Dropout(drop_prob),
            )
            head_in += feature_hidden
        elif n_features > 0:  # linear fusion: the head sees the features directly
            self.feature_branch = nn.Dropout(drop_prob)
            head_in += 2 * n_features
        else:
            self.feature_branch = None
        self.head = nn.Linear(head_in, n_outputs)

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t = x.shape
        flat = x.reshape(b * c, 1, t)
        band_power = self.filters(flat).square().mean(dim=-1)  # (B*C, n_filters)
        total_power = flat.square().mean(dim=-1)  # (B*C, 1)
        rel = torch.log(band_power + _LOG_EPS) - torch.log(total_power + _LOG_EPS)
        h = self.eeg_norm(rel.reshape(b, c, -1).mean(dim=1))  # (B, n_filters)
        if self.feature_branch is not None:
            if features is None:
                raise ValueError("this model was built with subject features; pass them")
            h = torch.cat([h, self.feature_branch(features)], dim=1)
        return self.head(h)


class FeatureFusion(nn.Module):
    """Late fusion for a backbone that takes only EEG: ``backbone(x) + linear(features)``."""

    def __init__(self, backbone: nn.Module, n_features: int, n_outputs: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_head = nn.Linear(2 * n_features, n_outputs) if n_features > 0 else None

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone(x)
        if self.feature_head is not None:
            if features is None:
                raise ValueError("this model was built with subject features; pass them")
            out = out + self.feature_head(features)
        return out


def build_model(
    name: str,
    *,
    n_chans: int,
    n_times: int,
    n_features: int = 0,
    n_outputs: int = 1,
    sfreq: float = 100.0,
) -> nn.Module:
    """A model by name (``cnn`` or ``eegnex``), taking ``(x, features)``."""
    if name == "cnn":
        return CompactCNN(n_chans, n_times, n_outputs, n_features, sfreq=sfreq)
    if name == "eegnex":
        return FeatureFusion(make_eegnex(n_chans, n_times, n_outputs), n_features, n_outputs)
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "MODEL_NAMES",
    "CompactCNN",
    "EEGNeX",
    "FeatureFusion",
    "gabor_filter_bank",
    "build_model",
    "count_parameters",
    "make_eegnex",
]
