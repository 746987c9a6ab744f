"""A registered model, ready to predict: resolved, verified, rebuilt with what it was trained on.

:func:`load_registered_model` resolves ``NAME``, ``NAME@ALIAS`` or ``NAME:VERSION`` to one
version of the registry, loads its checkpoint through
:meth:`tracking.registry.ModelRegistry.load_model` (sha256 verified, ``weights_only=True``),
and rebuilds the model from the run's recorded config. :class:`RegisteredModel` carries what
prediction must reproduce: the channel statistics, feature scaler and columns, target scale,
the training windows' shape (:class:`InputShape`) and the feature lineage (service, snapshots).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.challenges import ChallengeConfig, get_challenge
from training.checkpoints import Checkpoint
from training.config import TrainConfig
from training.errors import PredictError
from training.models import build_model

_SPEC = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<alias>[^@:]+)|:(?P<version>\d+))?$")


def parse_model_spec(text: str) -> tuple[str, str | int]:
    """``NAME`` (latest), ``NAME@ALIAS`` or ``NAME:VERSION`` -> (name, alias or version)."""
    match = _SPEC.match(text.strip())
    if match is None:
        raise ValueError(
            f"--model {text!r}: expected NAME, NAME@ALIAS or NAME:VERSION (e.g. eegnex-c2@production)"
        )
    if match["version"] is not None:
        return match["name"], int(match["version"])
    return match["name"], match["alias"] or "latest"


@dataclass(frozen=True)
class InputShape:
    """Channels, window length (samples) and sampling rate of a model's or a file's windows."""

    n_channels: int
    n_times: int
    sfreq: float

    def describe(self) -> str:
        return f"{self.n_channels} channels x {self.n_times} samples at {self.sfreq:g} Hz"


@dataclass(frozen=True)
class FeatureLineage:
    """The subject features a model was trained with (service None: no features)."""

    service: str | None
    columns: list[str]
    snapshot_ids: list[str]
    snapshot_id: str | None
    mode: str | None
    as_of: str | None


@dataclass
class RegisteredModel:
    """One registered version, loaded and rebuilt (in eval mode on ``device``)."""

    name: str
    version: int
    version_doc: dict
    checkpoint: Checkpoint
    config: TrainConfig
    challenge: ChallengeConfig
    shape: InputShape
    features: FeatureLineage
    model: torch.nn.Module
    device: torch.device
    experiment: dict = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"model {self.name} v{self.version}"

    @property
    def crop_samples(self) -> int | None:
        """Samples the model sees per window (the centre crop, as in validation); None: whole."""
        crop = int(self.checkpoint.model_info["n_times"])
        return None if crop == self.shape.n_times else crop


def _training_shape(lineage: dict, experiment: dict, label: str) -> InputShape:
    data = {k: v for k, v in (lineage.get("data") or {}).items() if v is not None}
    data = data or (experiment.get("data") or {})
    try:
        return InputShape(
            int(data["n_channels"]), int(data["window_samples"]), float(data["sfreq"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictError(
            f"{label}: its run recorded no window shape (data.n_channels / window_samples / "
            f"sfreq: {exc}); it was not trained by `eegfs train`"
        ) from exc


def _feature_lineage(lineage: dict, experiment: dict, checkpoint: Checkpoint) -> FeatureLineage:
    record = experiment.get("features") or {}
    if not checkpoint.feature_columns:
        return FeatureLineage(None, [], [], None, record.get("mode") or "none", None)
    service = lineage.get("feature_service") or record.get("service")
    snapshot_ids = list(lineage.get("snapshot_ids") or record.get("snapshot_ids") or [])
    as_of = (lineage.get("features") or {}).get("as_of") or record.get("as_of")
    return FeatureLineage(
        service,
        list(checkpoint.feature_columns),
        snapshot_ids,
        lineage.get("snapshot_id") or record.get("snapshot_id"),
        (lineage.get("features") or {}).get("mode") or record.get("mode"),
        as_of,
    )


def load_registered_model(
    settings, spec: str, *, device: str | torch.device = "cpu"
) -> RegisteredModel:
    """Resolve ``spec`` in the registry, load its verified checkpoint and rebuild the model.

    Raises
    ------
    NotFoundError, ChecksumMismatchError
        From the registry: no such model, alias or version; a file whose sha256 differs.
    CheckpointError
        The file is not a training checkpoint of this version of eegfs.
    PredictError
        The run's record lacks what prediction needs (window shape, feature service).
    """
    from tracking.database import open_database
    from tracking.registry import ModelRegistry
    from tracking.schema import EXPERIMENTS

    name, selector = parse_model_spec(spec)
    with open_database(settings) as db:
        registry = ModelRegistry(db)
        version = registry.get_version(name, selector)
        number = int(version["version"])  # pinned: an alias moving now changes nothing
        payload = registry.load_model(name, number, Path(settings.data_dir) / "models")
        lineage = version.get("lineage") or {}
        experiment = db[EXPERIMENTS].find_one({"_id": lineage.get("experiment_id")}) or {}
    label = f"model {name} v{number}"
    checkpoint = Checkpoint.from_payload(payload, label)
    return _rebuild(name, number, version, checkpoint, experiment, torch.device(device))


def _rebuild(
    name: str,
    number: int,
    version: dict,
    checkpoint: Checkpoint,
    experiment: dict,
    device: torch.device,
) -> RegisteredModel:
    label = f"model {name} v{number}"
    lineage = version.get("lineage") or {}
    config = TrainConfig.from_dict(checkpoint.config)
    features = _feature_lineage(lineage, experiment, checkpoint)
    if features.columns and not features.service:
        raise PredictError(f"{label}: trained with features but no feature service is recorded")
    shape = _training_shape(lineage, experiment, label)
    info: dict[str, Any] = checkpoint.model_info
    model = build_model(
        config.model,
        n_chans=int(info["n_chans"]),
        n_times=int(info["n_times"]),
        n_features=int(info["n_features"]),
        sfreq=shape.sfreq,
    )
    model.load_state_dict(checkpoint.model_state)
    model.to(device).eval()
    return RegisteredModel(
        name,
        number,
        version,
        checkpoint,
        config,
        get_challenge(config.challenge),
        shape,
        features,
        model,
        device,
        experiment,
    )


def check_input_shape(model: RegisteredModel, path: str | Path, found: InputShape) -> None:
    """Refuse a file whose windows differ from the model's training windows (both named)."""
    if found != model.shape:
        raise PredictError(
            f"{path} has {found.describe()}; {model.label} was trained on "
            f"{model.shape.describe()}. Predict files of the training montage, window length "
            "and rate (resample or re-epoch the recording first)"
        )


__all__ = [
    "FeatureLineage",
    "InputShape",
    "RegisteredModel",
    "check_input_shape",
    "load_registered_model",
    "parse_model_spec",
]
