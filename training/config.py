"""The configuration of a training run, and the fields a resume may change.

:class:`TrainConfig` is everything that defines a run; it is stored in the experiment's
``config.train`` and read back by ``--resume``. :data:`RESUME_OVERRIDABLE` is the one list of the
fields a resume may change (the CLI reads it too): they change how long or where a run trains,
or what is logged, never what it computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from training.challenges import get_challenge
from training.features import FEATURE_MODES, FEATURE_POLICIES, FEATURE_SETS
from training.models import MODEL_NAMES

DEFAULT_EPOCHS = 8

#: Config fields that ``--resume`` may change (everything else is the stored run's).
RESUME_OVERRIDABLE = ("epochs", "workers", "device", "log_every", "upload_checkpoints")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (stored in the experiment's ``config``)."""

    challenge: int = 2
    data: tuple[str, ...] = ()
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    workers: int = 2
    device: str = "cpu"
    model: str = "cnn"
    features: str = "online"
    feature_set: str = "summary"
    missing_features: str = "impute"
    as_of: str | None = None
    cache_size: int = 4096
    val_release: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    target: str | None = None
    lr: float | None = None
    normalize: bool = True
    log_every: int = 10
    upload_checkpoints: bool = False
    name: str | None = None
    tags: tuple[str, ...] = ()
    notes: str = ""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option and the accepted values."""
        get_challenge(self.challenge)
        if not self.data:
            raise ValueError("no input files: pass --data FILE [FILE ...]")
        for ok, message in self._checks():
            if not ok:
                raise ValueError(message)
        if self.as_of is not None:
            parse_as_of(self.as_of)

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (
                self.model in MODEL_NAMES,
                f"--model must be one of {MODEL_NAMES}, got {self.model!r}",
            ),
            (
                self.features in FEATURE_MODES,
                f"--features must be one of {FEATURE_MODES}, got {self.features!r}",
            ),
            (
                self.feature_set in FEATURE_SETS,
                f"--feature-set must be one of {FEATURE_SETS}, got {self.feature_set!r}",
            ),
            (
                self.missing_features in FEATURE_POLICIES,
                f"--missing-features must be one of {FEATURE_POLICIES}, got {self.missing_features!r}",
            ),
            (
                0.0 < self.val_fraction < 1.0,
                f"--val-fraction must be in (0, 1), got {self.val_fraction}",
            ),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}"),
            (self.cache_size >= 0, f"--cache-size must be >= 0, got {self.cache_size}"),
            (
                self.as_of is None or self.features == "historical",
                "--as-of only applies with --features historical",
            ),
        ]

    def with_resume_overrides(self, overrides: Mapping | None) -> TrainConfig:
        """This (stored) config with the :data:`RESUME_OVERRIDABLE` fields of ``overrides`` set.

        Raises
        ------
        ValueError
            A field that a resume may not change, or a bad value.
        """
        overrides = dict(overrides or {})
        bad = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
        if bad:
            raise ValueError(
                f"options {bad} cannot change when resuming (the run's data, split, model "
                f"and features are fixed); only {list(RESUME_OVERRIDABLE)} can"
            )
        config = dataclasses.replace(self, **overrides)
        config.validate()
        return config

    def with_resolved_as_of(self, now: datetime) -> TrainConfig:
        """For historical features without ``as_of``: ``as_of = now``, so the run records it."""
        if self.features != "historical" or self.as_of is not None:
            return self
        return dataclasses.replace(self, as_of=now.astimezone(UTC).isoformat())

    def default_name(self) -> str:
        """``c<challenge>-<model>-<features>-s<seed>``, the run name when none is given."""
        return self.name or f"c{self.challenge}-{self.model}-{self.features}-s{self.seed}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        d["tags"] = list(self.tags)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["data"] = tuple(values.get("data", ()))
        values["tags"] = tuple(values.get("tags", ()))
        return cls(**values)


def parse_as_of(text: str) -> datetime:
    """ISO 8601 time; naive means UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"--as-of {text!r} is not an ISO 8601 time; example: 2025-06-01T12:00:00+00:00"
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


__all__ = [
    "DEFAULT_EPOCHS",
    "RESUME_OVERRIDABLE",
    "TrainConfig",
    "parse_as_of",
]
