"""One training run end to end: data, features, model, tracking, live metrics, checkpoints.

:func:`train` is the library function behind ``eegfs train``. It builds the window index and a
subject-level split, normalisation statistics from training windows only, the feature source
(online lookups per batch, a historical frame, or none), the model and the optimiser of the
challenge; records the run in MongoDB through :class:`tracking.Tracker` (config, data summary,
feature service and snapshot, code commit, epochs, step metrics, checkpoints with sha256, the
best one flagged, heartbeats, the log, final status) and publishes live metrics on Redis.
``resume=EXPERIMENT_ID`` continues a run from its latest checkpoint at the next epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from training.challenges import ChallengeConfig, get_challenge
from training.data import (
    EpochSampler,
    WindowDataset,
    WindowIndex,
    build_index,
    compute_channel_stats,
    worker_init_fn,
)
from training.errors import CheckpointError, DataError, TrainingError
from training.features import (
    FEATURE_MODES,
    FEATURE_POLICIES,
    FEATURE_SETS,
    BatchCollate,
    FeatureScaler,
    setup_features,
)
from training.live import LivePublisher
from training.loader import WindowLoader
from training.loop import LoopState, TargetScale, fit
from training.models import MODEL_NAMES, build_model, count_parameters
from training.normalization import ChannelStats
from training.splits import Split, make_split

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
DEFAULT_EPOCHS = 8
#: Challenge 2 goal of the demo (issue 5, point 9): subject-level validation NRMSE at most this.
DEMO_GOAL_NRMSE = {2: 0.8}


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
        checks = [
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
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.as_of is not None:
            parse_as_of(self.as_of)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        d["tags"] = list(self.tags)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
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


@dataclass
class TrainResult:
    """What :func:`train` reports."""

    experiment_id: str
    challenge: int
    primary_metric: str
    best_epoch: int | None
    best_value: float
    mean_predictor_value: float
    best_checkpoint: str | None
    last_epoch: int | None
    epochs_run: int
    resumed_from_epoch: int | None
    duration_s: float
    goal_nrmse: float | None
    goal_reached: bool | None
    best_metrics: dict
    data: dict
    features: dict
    live: dict
    history: list[dict] = field(default_factory=list)


# --- helpers --------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``/``cuda:N`` (must be available) or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(
            f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or auto"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"--device {name} was asked for but CUDA is not available here (torch "
            f"{torch.__version__}); use --device cpu, or install a CUDA build of torch"
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _crop_samples(challenge: ChallengeConfig, index: WindowIndex) -> int | None:
    if challenge.crop_seconds is None:
        return None
    crop = int(round(challenge.crop_seconds * index.sfreq))
    if crop > index.n_times:
        raise DataError(
            f"Challenge {challenge.number} crops {challenge.crop_seconds} s = {crop} samples at "
            f"{index.sfreq} Hz, but the windows have only {index.n_times} samples; check that "
            "the files are Challenge 2 (4 s) windows"
        )
    return crop


def _make_loader(
    dataset: WindowDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int,
    collate: BatchCollate,
    device: torch.device,
):
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
    return WindowLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        pin_memory=device.type == "cuda",
    )


def _atomic_torch_save(obj: dict, path: Path) -> None:
    from services.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`train` (``torch.load(weights_only=True)``: no pickle code)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format') if isinstance(payload, dict) else '?'}"
            f", expected {CHECKPOINT_FORMAT}; it was not written by this version of eegfs train"
        )
    return payload


class _LogCapture(logging.Handler):
    """Keeps the run's log lines (warnings of any logger + the epoch lines) for ``attach_log``."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a broken log record must not break training
            self.lines.append(f"{record.levelname} {record.name}: <unformattable message>")

    def add(self, text: str) -> None:
        self.lines.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}")


#: Config fields that do not change what a run computes (left out when looking for a twin).
_NOT_IDENTITY = frozenset({"workers", "log_every", "cache_size", "name", "tags", "notes"})


def find_identical_run(settings, config: TrainConfig) -> dict | None:
    """A completed run that computed exactly what ``config`` would, or None.

    Identical means: the same configuration (apart from :data:`_NOT_IDENTITY`), the same code
    commit with no uncommitted changes, and, for online features, the feature snapshot the online
    store serves now. Used by ``eegfs train --skip-if-done`` so that ``make demo`` run twice
    records one run, not two.
    """
    from tracking import Tracker
    from tracking.gitinfo import detect_git

    config.validate()
    code = detect_git()
    if code["commit"] is None or code["dirty"]:
        return None  # no way to tell whether the code is the same
    wanted = {f"train.{k}": v for k, v in config.to_dict().items() if k not in _NOT_IDENTITY}
    tracker = Tracker(settings)
    try:
        candidates = tracker.search_runs(
            challenge=config.challenge, status="completed", config=wanted, limit=20
        )
        served = None
        if config.features == "online":
            from featurestore.client import FeatureStoreClient

            client = FeatureStoreClient(settings, cache_size=0)
            try:
                served = client.served_snapshot_id()
            finally:
                client.close()
        for summary in candidates:
            doc = tracker.get_run(summary["_id"])
            same_code = (doc.get("code") or {}).get("commit") == code["commit"] and not (
                doc.get("code") or {}
            ).get("dirty")
            same_features = config.features != "online" or (
                served is not None and (doc.get("features") or {}).get("snapshot_id") == served
            )
            if same_code and same_features:
                return doc
        return None
    finally:
        tracker.close()


# --- the run ----------------------------------------------------------------------------------
def train(
    settings,
    config: TrainConfig | None = None,
    *,
    resume: str | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) one run; see the module docstring.

    Parameters
    ----------
    settings : Settings
        Redis (live metrics, online features), MongoDB (tracking), ``data_dir`` (checkpoints
        under ``data_dir/checkpoints/<experiment_id>/``) and the feature repository.
    config : TrainConfig
        The run's configuration (ignored when resuming: the stored one is used).
    resume : str, optional
        Experiment id to continue from its latest checkpoint, at the next epoch.
    overrides : dict, optional
        When resuming, config fields to change (``epochs`` to train longer, ``workers``,
        ``device``, ``log_every``).
    progress : bool
        Progress bars (tqdm) for the epochs.
    echo : callable, optional
        Receives one line per epoch and per notable event (default: the module logger).

    Raises
    ------
    TrainingError
        Bad data, features, checkpoint or device (the run is recorded as ``failed`` when it
        was already created).
    ValueError
        A bad option (nothing is recorded).
    """
    from tracking import Tracker

    started = time.perf_counter()
    capture = _LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)

    def say(text: str) -> None:
        capture.add(text)
        (echo or (lambda t: logger.info("%s", t)))(text)

    threads = torch.get_num_threads()
    tracker = Tracker(settings)
    try:
        if resume is not None:
            doc = tracker.get_run(resume)
            stored = (doc.get("config") or {}).get("train")
            if not stored:
                raise CheckpointError(
                    f"experiment {resume} was not started by eegfs train (no config.train); "
                    "it cannot be resumed here"
                )
            config = TrainConfig.from_dict(stored)
            allowed = {"epochs", "workers", "device", "log_every", "upload_checkpoints"}
            bad = sorted(set(overrides or {}) - allowed)
            if bad:
                raise ValueError(
                    f"options {bad} cannot change when resuming (the run's data, split, model "
                    f"and features are fixed); only {sorted(allowed)} can"
                )
            config = dataclasses.replace(config, **(overrides or {}))
            config.validate()
            run = tracker.resume_run(resume)
            # Whatever fails from here on marks the resumed run failed, never leaves it "running".
            with run:
                ckpt = run.latest_checkpoint()
                if ckpt is None:
                    raise CheckpointError(
                        f"experiment {resume} has no checkpoint to resume from (it stopped before "
                        "the end of its first epoch); start a new run instead"
                    )
                ckpt_dir = Path(settings.data_dir) / "checkpoints" / str(run.id)
                path = tracker.fetch_checkpoint(ckpt, ckpt_dir)
                payload = load_checkpoint(path)
                say(f"resuming experiment {run.id} from {path} (epoch {ckpt['epoch']})")
                result = _run(settings, config, tracker, run, payload, say, progress, capture)
        else:
            if config is None:
                raise ValueError("train() needs a TrainConfig (or resume=EXPERIMENT_ID)")
            config.validate()
            result = _run(settings, config, tracker, None, None, say, progress, capture)
        result.duration_s = time.perf_counter() - started
        return result
    finally:
        root.removeHandler(capture)
        tracker.close()
        torch.set_num_threads(threads)


def _run(
    settings,
    config: TrainConfig,
    tracker,
    run,
    payload: dict | None,
    say,
    progress: bool,
    capture: _LogCapture,
) -> TrainResult:
    challenge = get_challenge(config.challenge)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    if device.type == "cpu" and config.workers > 0:
        # The workers read and decode; the main process computes. More threads than cores
        # would only contend with the workers.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - config.workers))

    # Data and split.
    index = build_index(list(config.data), target=config.target, layout=challenge.default_layout)
    split = make_split(
        index, val_fraction=config.val_fraction, seed=config.seed, val_release=config.val_release
    )
    if payload is not None and list(split.val_subjects) != list(payload["val_subjects"]):
        raise CheckpointError(
            "the validation subjects of the resumed run differ from the ones recomputed now: the "
            "input files changed since the run started; resume with the original files"
        )
    crop = _crop_samples(challenge, index)
    if payload is not None:
        stats = (
            None
            if payload["channel_stats"] is None
            else ChannelStats.from_dict(payload["channel_stats"])
        )
    else:
        stats = (
            compute_channel_stats(index, split.train, seed=config.seed)
            if config.normalize
            else None
        )
    train_targets = index.targets[split.train].astype(np.float64)
    if payload is not None:
        scale = TargetScale(**payload["target_scale"])
    else:
        std = float(train_targets.std())
        scale = TargetScale(float(train_targets.mean()), std if std > 0 else 1.0)

    # Features.
    as_of = None
    if config.features == "historical":
        as_of = parse_as_of(config.as_of) if config.as_of else datetime.now(UTC)
        if config.as_of is None:
            config = dataclasses.replace(config, as_of=as_of.isoformat())
    feature_setup = setup_features(
        settings,
        mode=config.features,
        challenge=config.challenge,
        train_subjects=split.train_subjects,
        all_subjects=[*split.train_subjects, *split.val_subjects],
        feature_set=config.feature_set,
        as_of=as_of,
        cache_size=config.cache_size,
    )
    feature_record: dict = {"mode": config.features}
    scaler = None
    source = None
    n_features = 0
    if feature_setup is not None:
        source = feature_setup.source
        scaler = feature_setup.scaler
        feature_record = feature_setup.record
        if payload is not None:
            if payload.get("feature_columns") != feature_record["columns"]:
                raise CheckpointError(
                    "the feature columns of the service changed since the run started; "
                    "resume is not possible, start a new run"
                )
            scaler = FeatureScaler.from_dict(payload["feature_scaler"])
        n_features = len(feature_record["columns"])
    collate = BatchCollate(source, scaler, policy=config.missing_features)

    train_ds = WindowDataset(
        index, split.train, crop_samples=crop, random_crop=crop is not None, stats=stats
    )
    val_ds = WindowDataset(index, split.val, crop_samples=crop, random_crop=False, stats=stats)
    train_loader = _make_loader(
        train_ds,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        workers=config.workers,
        collate=collate,
        device=device,
    )
    val_loader = _make_loader(
        val_ds,
        batch_size=max(64, config.batch_size),
        shuffle=False,
        seed=config.seed,
        workers=config.workers,
        collate=collate,
        device=device,
    )

    # Model and optimiser.
    model = build_model(
        config.model,
        n_chans=index.n_channels,
        n_times=train_ds.n_times,
        n_features=n_features,
        sfreq=index.sfreq,
    ).to(device)
    optimizer = challenge.make_optimizer(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    state = LoopState()
    if payload is not None:
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        scheduler.T_max = config.epochs
        state = LoopState.from_dict(payload["loop_state"])
        torch.set_rng_state(payload["torch_rng_state"])
    resumed_from = None if payload is None else state.next_epoch - 1

    model_info = {
        "name": config.model,
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "n_chans": index.n_channels,
        "n_times": train_ds.n_times,
        "n_features": n_features,
        "implementation": type(getattr(model, "backbone", model)).__module__,
    }
    data_info = _data_summary(index, split, crop, stats)
    if run is None:
        run = tracker.start_run(
            config.name or f"c{config.challenge}-{config.model}-{config.features}-s{config.seed}",
            config.challenge,
            model=model_info,
            config={
                "train": config.to_dict(),
                "challenge": dataclasses.asdict(challenge),
                "lr": config.lr or challenge.lr,
                "loss": challenge.loss,
                "optimizer": challenge.optimizer,
                "scheduler": "cosine",
                "primary_metric": challenge.primary_metric,
                "device": str(device),
            },
            data=data_info,
            features=feature_record,
            tags=list(config.tags),
            notes=config.notes,
        )
    experiment_id = str(run.id)
    ckpt_dir = Path(settings.data_dir) / "checkpoints" / experiment_id

    def save_checkpoint(epoch: int, metrics: dict, is_best: bool, loop_state: LoopState) -> Path:
        path = ckpt_dir / f"epoch_{epoch:04d}.pt"
        _atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "experiment_id": experiment_id,
                "epoch": epoch,
                "model": model_info,
                "model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(),
                "loop_state": loop_state.to_dict(),
                "torch_rng_state": torch.get_rng_state(),
                "channel_stats": None if stats is None else stats.to_dict(),
                "feature_scaler": None if scaler is None else scaler.to_dict(),
                "feature_columns": feature_record.get("columns"),
                "target_scale": {"mean": scale.mean, "std": scale.std},
                "val_subjects": list(split.val_subjects),
                "config": config.to_dict(),
                "metrics": {k: float(v) for k, v in metrics.items()},
            },
            path,
        )
        run.log_checkpoint(
            path, epoch=epoch, metrics=metrics, is_best=is_best, upload=config.upload_checkpoints
        )
        return path

    live = LivePublisher(settings.redis_url, experiment_id).start()
    status = "failed"
    try:
        with run:
            say(
                f"experiment {experiment_id}: Challenge {config.challenge}, {config.model} "
                f"({model_info['parameters']:,} parameters), {len(split.train)} train / {len(split.val)} "
                f"val windows ({len(split.train_subjects)} / {len(split.val_subjects)} subjects), "
                f"features {config.features}"
                + (
                    f" {feature_record.get('service')} @ {feature_record.get('snapshot_id')}"
                    if feature_setup is not None
                    else ""
                )
                + f", device {device}"
            )
            live.publish(
                "start",
                status="running",
                epoch=state.next_epoch,
                step=state.global_step,
                challenge=config.challenge,
                model=config.model,
                features=config.features,
                epochs=config.epochs,
            )
            try:
                fit(
                    model,
                    train_loader,
                    val_loader,
                    optimizer=optimizer,
                    loss_fn=challenge.make_loss(),
                    device=device,
                    epochs=config.epochs,
                    state=state,
                    scale=scale,
                    primary_metric=challenge.primary_metric,
                    scheduler=scheduler,
                    recorder=run,
                    live=live,
                    save_checkpoint=save_checkpoint,
                    on_epoch_start=lambda e: train_loader.sampler.set_epoch(e),
                    log_every=config.log_every,
                    progress=progress,
                    echo=say,
                )
            except KeyboardInterrupt:
                status = "stopped"
                raise
            finally:
                train_ds.close()
                val_ds.close()
                if hasattr(source, "close"):
                    source.close()
            result = _result(
                experiment_id,
                config,
                challenge,
                state,
                run,
                resumed_from,
                data_info,
                feature_record,
            )
            run.set_summary(_summary_metrics(result))
            status = "completed"
    finally:
        live.publish(
            "end",
            status=status,
            epoch=state.next_epoch - 1 if state.next_epoch else None,
            step=state.global_step,
        )
        live.close()
        try:
            run.attach_log("\n".join(capture.lines) + "\n")
        except Exception as exc:  # noqa: BLE001 - the log is a courtesy; never mask the outcome
            logger.warning("could not store the run log: %s", exc)
    result.live = live.stats()
    return result


def _data_summary(
    index: WindowIndex, split: Split, crop: int | None, stats: ChannelStats | None
) -> dict:
    summary = index.summary()
    return {
        "files": summary["files"],
        "releases": sorted(set(index.releases.tolist())),
        "target": index.files[0].target_name,
        "n_channels": index.n_channels,
        "sfreq": index.sfreq,
        "window_samples": index.n_times,
        "crop_samples": crop,
        "normalization": None if stats is None else {"from": "train", "windows": stats.n_windows},
        "dropped_missing_target": summary["dropped_missing_target"],
        "subjects_without_target": summary["subjects_without_target"],
        "split": split.summary(),
        "splits": {
            "train": {"windows": int(split.train.size), "subjects": len(split.train_subjects)},
            "val": {"windows": int(split.val.size), "subjects": len(split.val_subjects)},
        },
        "val_subjects": list(split.val_subjects),
    }


def _result(
    experiment_id: str,
    config: TrainConfig,
    challenge: ChallengeConfig,
    state: LoopState,
    run,
    resumed_from: int | None,
    data_info: dict,
    feature_record: dict,
) -> TrainResult:
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), None) or {}
    mean_key = (
        "val_subject_mean_predictor_nrmse"
        if challenge.primary_metric == "val_subject_nrmse"
        else "val_mean_predictor_nrmse"
    )
    best_value = best.get(challenge.primary_metric)
    best_value = math.nan if best_value is None else float(best_value)
    goal = DEMO_GOAL_NRMSE.get(config.challenge)
    best_ckpt = run.best_checkpoint()
    last = state.history[-1]["epoch"] if state.history else None
    return TrainResult(
        experiment_id=experiment_id,
        challenge=config.challenge,
        primary_metric=challenge.primary_metric,
        best_epoch=state.best_epoch,
        best_value=best_value,
        mean_predictor_value=float(best.get(mean_key) or math.nan),
        best_checkpoint=None if best_ckpt is None else best_ckpt["path"],
        last_epoch=last,
        epochs_run=len(
            [h for h in state.history if resumed_from is None or h["epoch"] > resumed_from]
        ),
        resumed_from_epoch=resumed_from,
        duration_s=math.nan,
        goal_nrmse=goal,
        goal_reached=None if goal is None or not math.isfinite(best_value) else best_value <= goal,
        best_metrics={k: v for k, v in best.items() if k != "epoch"},
        data=data_info,
        features=feature_record,
        live={},
        history=list(state.history),
    )


def _summary_metrics(result: TrainResult) -> dict[str, float]:
    out = {
        "best_epoch": float(result.best_epoch) if result.best_epoch is not None else math.nan,
        f"best_{result.primary_metric}": result.best_value,
        "mean_predictor_nrmse": result.mean_predictor_value,
    }
    for key in ("val_nrmse", "val_subject_nrmse", "val_loss", "train_loss"):
        value = result.best_metrics.get(key)
        if value is not None:
            out[key] = float(value)
    if result.goal_reached is not None:
        out["goal_reached"] = 1.0 if result.goal_reached else 0.0
    return {k: v for k, v in out.items() if math.isfinite(v)}


def format_summary(result: TrainResult) -> str:
    """The human summary ``eegfs train`` prints at the end."""
    level = "subject-level" if result.primary_metric == "val_subject_nrmse" else "window-level"
    lines = [
        f"experiment      {result.experiment_id}",
        f"epochs          {result.epochs_run} run"
        + (
            f" (resumed after epoch {result.resumed_from_epoch})"
            if result.resumed_from_epoch is not None
            else ""
        )
        + f", last epoch {result.last_epoch}, {result.duration_s:.1f} s",
        f"best epoch      {result.best_epoch}",
        f"val NRMSE       {result.best_value:.3f} ({level}; mean predictor "
        f"{result.mean_predictor_value:.3f})",
    ]
    window = result.best_metrics.get("val_nrmse")
    if level == "subject-level" and window is not None:
        lines.append(f"window-level    {window:.3f}")
    if result.goal_nrmse is not None:
        verdict = "REACHED" if result.goal_reached else "NOT reached"
        lines.append(f"goal            {level} val NRMSE <= {result.goal_nrmse}: {verdict}")
    feats = result.features
    if feats.get("mode") != "none":
        lines.append(
            f"features        {feats.get('mode')} {feats.get('service')} snapshot "
            f"{feats.get('snapshot_id')} ({feats.get('n_columns')} columns)"
        )
    else:
        lines.append("features        none")
    lines.append(f"checkpoint      {result.best_checkpoint or '-'} (best)")
    lines.append(f"details         eegfs runs show {result.experiment_id}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_EPOCHS",
    "TrainConfig",
    "TrainResult",
    "format_summary",
    "load_checkpoint",
    "parse_as_of",
    "resolve_device",
    "train",
]
