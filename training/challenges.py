"""The two EEG2025 challenges as configurations (loss, optimiser, crop, primary metric).

* Challenge 1 predicts response time (s) from 2 s stimulus-locked windows: MSE loss, AdamW
  (lr 1e-3, weight decay 1e-5), whole windows, window-level NRMSE.
* Challenge 2 predicts a psychopathology score (externalizing by default, or p_factor) from 4 s
  windows cropped to 2 s (random crop for training, centre crop for validation): L1 loss, Adamax
  lr 0.002 as in the starter kit, subject-level NRMSE (mean prediction per subject) as the
  primary figure, window level beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ChallengeConfig:
    """How one challenge is trained and scored."""

    number: int
    title: str
    loss: str  # "mse" or "l1"
    optimizer: str  # "adamw" or "adamax"
    lr: float
    weight_decay: float
    crop_seconds: float | None  # None: whole window
    primary_metric: str  # key of training.metrics.evaluate()
    default_layout: str  # HDF5 layout name the challenge's files use
    #: Input feature service index in featurestore.labels.INPUT_SERVICES.
    feature_service_key: int

    def make_loss(self) -> nn.Module:
        return nn.MSELoss() if self.loss == "mse" else nn.L1Loss()

    def make_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        lr = self.lr if lr is None else lr
        if self.optimizer == "adamax":
            return torch.optim.Adamax(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)


CHALLENGES: dict[int, ChallengeConfig] = {
    1: ChallengeConfig(
        number=1,
        title="Challenge 1: response time from stimulus-locked windows",
        loss="mse",
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-5,
        crop_seconds=None,
        primary_metric="val_nrmse",
        default_layout="challenge1",
        feature_service_key=1,
    ),
    2: ChallengeConfig(
        number=2,
        title="Challenge 2: psychopathology score from resting windows",
        loss="l1",
        optimizer="adamax",
        lr=2e-3,
        weight_decay=0.0,
        crop_seconds=2.0,
        primary_metric="val_subject_nrmse",
        default_layout="challenge2",
        feature_service_key=2,
    ),
}


def get_challenge(number: int) -> ChallengeConfig:
    try:
        return CHALLENGES[int(number)]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown challenge {number!r}; expected 1 or 2") from exc


__all__ = ["CHALLENGES", "ChallengeConfig", "get_challenge"]
