"""Models (EEGNeX against the published configuration, the fusion CNN) and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.challenges import CHALLENGES, get_challenge
from training.metrics import evaluate, mean_predictor_nrmse, nrmse, subject_means, subject_nrmse
from training.models import (
    CompactCNN,
    EEGNeX,
    FeatureFusion,
    build_model,
    count_parameters,
    gabor_filter_bank,
    make_eegnex,
)


def test_eegnex_matches_the_published_configuration():
    model = EEGNeX(n_chans=129, n_times=200, n_outputs=1)
    assert count_parameters(model) == 62_353  # braindecode's EEGNeX(129, 1, 200)
    out = model(torch.randn(3, 129, 200))
    assert out.shape == (3, 1)
    by_block = {
        name: count_parameters(getattr(model, name))
        for name in ("block_1", "block_2", "block_3", "block_4", "block_5", "final_layer")
    }
    assert by_block == {
        "block_1": 528,
        "block_2": 16_448,
        "block_3": 8_384,
        "block_4": 32_832,
        "block_5": 4_112,
        "final_layer": 49,
    }


def test_eegnex_factory_and_other_shapes():
    model = make_eegnex(129, 200, 1)
    assert count_parameters(model) == 62_353
    for n_chans, n_times in ((129, 400), (32, 256), (8, 100)):
        assert EEGNeX(n_chans, n_times, 2)(torch.randn(2, n_chans, n_times)).shape == (2, 2)


def test_eegnex_max_norm_constraints_hold_after_a_forward_pass():
    model = EEGNeX(16, 128)
    with torch.no_grad():
        model.block_3[0].weight.mul_(50.0)
        model.final_layer.weight.mul_(50.0)
    model(torch.randn(2, 16, 128))
    conv_norms = model.block_3[0].weight.flatten(1).norm(dim=1)
    assert (conv_norms <= 1.0 + 1e-5).all()
    assert (model.final_layer.weight.norm(dim=1) <= 0.25 + 1e-5).all()


def test_cnn_uses_features_and_their_mask():
    torch.manual_seed(0)
    model = CompactCNN(129, 200, 1, n_features=5).eval()
    x = torch.randn(4, 129, 200)
    feats = torch.zeros(4, 10)
    base = model(x, feats)
    assert base.shape == (4, 1)
    feats_changed = feats.clone()
    feats_changed[:, 0] = 3.0
    assert not torch.allclose(model(x, feats_changed), base)
    mask_changed = feats.clone()
    mask_changed[:, 5:] = 1.0
    assert not torch.allclose(model(x, mask_changed), base)
    with pytest.raises(ValueError, match="features"):
        model(x, None)
    eeg_only = CompactCNN(129, 200, 1).eval()
    assert eeg_only(x).shape == (4, 1)


def test_cnn_eeg_branch_ignores_channel_amplitude():
    """Relative log band power: scaling a window by a constant leaves the output unchanged."""
    torch.manual_seed(0)
    model = CompactCNN(16, 200).eval()
    x = torch.randn(3, 16, 200)
    torch.testing.assert_close(model(x), model(7.0 * x), rtol=1e-4, atol=1e-4)


def test_build_model_fuses_features_for_eegnex():
    model = build_model("eegnex", n_chans=129, n_times=200, n_features=3)
    assert isinstance(model, FeatureFusion)
    assert count_parameters(model) == 62_353 + 6 + 1
    assert model(torch.randn(2, 129, 200), torch.randn(2, 6)).shape == (2, 1)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", n_chans=4, n_times=100)


def test_gabor_bank_is_band_limited_and_ordered():
    bank = gabor_filter_bank(6, 49, 100.0).squeeze(1).numpy()
    assert bank.shape == (6, 49)
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, rtol=1e-5)
    freqs = np.fft.rfftfreq(512, 1 / 100.0)
    peaks = [freqs[np.argmax(np.abs(np.fft.rfft(w, 512)))] for w in bank]
    assert peaks == sorted(peaks) and peaks[0] < 4 < 30 < peaks[-1]


def test_nrmse_and_subject_level():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert nrmse(y, y) == 0.0
    assert nrmse(y, np.full(4, y.mean())) == pytest.approx(1.0)
    assert nrmse(y, y + 1.0) == pytest.approx(1.0 / y.std())
    assert math.isnan(nrmse(np.ones(3), np.zeros(3)))
    subjects = np.array(["a", "a", "b", "b"])
    y_s = np.array([1.0, 1.0, 3.0, 3.0])
    pred = np.array([0.0, 2.0, 2.0, 4.0])  # per-subject means are exact
    assert subject_nrmse(y_s, pred, subjects) == 0.0
    assert nrmse(y_s, pred) > 0.9
    ids, means = subject_means(pred, subjects)
    assert ids.tolist() == ["a", "b"] and means.tolist() == [1.0, 3.0]
    assert mean_predictor_nrmse(y, y.mean()) == pytest.approx(1.0)
    assert mean_predictor_nrmse(y, y.mean() + y.std()) == pytest.approx(math.sqrt(2.0))
    figures = evaluate(y_s, pred, subjects, train_mean=2.0)
    assert figures["val_subject_nrmse"] == 0.0
    assert figures["val_subject_mean_predictor_nrmse"] == pytest.approx(1.0)


def test_challenge_configs():
    c2 = get_challenge(2)
    assert (c2.loss, c2.optimizer, c2.lr, c2.crop_seconds) == ("l1", "adamax", 0.002, 2.0)
    assert c2.primary_metric == "val_subject_nrmse"
    assert CHALLENGES[1].loss == "mse" and CHALLENGES[1].crop_seconds is None
    opt = c2.make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.Adamax)
    with pytest.raises(ValueError, match="challenge"):
        get_challenge(3)
