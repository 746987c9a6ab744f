"""One training run end to end: plan, parts, tracking, live metrics, checkpoints.

:func:`train` is the library function behind ``eegfs train``. It first decides what to do
(:func:`training.plan.plan_run`: a fresh run, or a resumed one with its checkpoint loaded), then
builds the parts (:mod:`training.prepare`: window index and subject-level split, normalisation
statistics from training windows only, the feature source, the model and optimiser of the
challenge), records the run in MongoDB through :class:`tracking.Tracker` (config, data summary,
feature service and snapshot, code commit, epochs, step metrics, checkpoints with sha256, the
best one flagged, heartbeats, the log, final status), publishes live metrics on Redis and runs
the loop (:func:`training.loop.fit`). ``resume=EXPERIMENT_ID`` continues a run from its latest
checkpoint at the next epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from tracking.status import COMPLETED, FAILED, RUNNING, STOPPED
from training.challenges import ChallengeConfig, get_challenge
from training.checkpoints import Checkpoint, checkpoint_dir, checkpoint_file, save_checkpoint
from training.claiming import Deferred, RunClaim
from training.config import TrainConfig
from training.live import LivePublisher
from training.loop import LoopState, fit
from training.plan import RunPlan, plan_run
from training.prepare import (
    RunData,
    RunFeatures,
    RunModel,
    make_loaders,
    prepare_data,
    prepare_features,
    prepare_model,
    resolve_device,
    seed_everything,
    share_cores_with_workers,
)
from training.results import TrainResult, make_result, summary_metrics

logger = logging.getLogger(__name__)


class _LogCapture(logging.Handler):
    """Keeps the run's log lines (warnings of any logger + the epoch lines) for ``attach_log``."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []
        self._echo = echo or (lambda text: logger.info("%s", text))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a broken log record must not break training
            self.lines.append(f"{record.levelname} {record.name}: <unformattable message>")

    def say(self, text: str) -> None:
        """Keep ``text`` (time-stamped) and pass it to the echo function."""
        self.lines.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}")
        self._echo(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    @contextlib.contextmanager
    def attached(self) -> Iterator[_LogCapture]:
        """Capture the warnings of every logger (the root logger's handlers) while inside."""
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)


@contextlib.contextmanager
def _torch_threads_restored() -> Iterator[None]:
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- the run ----------------------------------------------------------------------------------
def train(
    settings,
    config: TrainConfig | None = None,
    *,
    resume: str | None = None,
    overrides: dict | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    skip_if_done: bool = False,
    code: Mapping | None = None,
) -> TrainResult | Deferred:
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
        When resuming, config fields to change (:data:`training.config.RESUME_OVERRIDABLE`:
        ``epochs`` to train longer, ``workers``, ``device``, ``log_every``,
        ``upload_checkpoints``).
    progress : bool
        Progress bars (tqdm) for the epochs.
    echo : callable, optional
        Receives one line per epoch and per notable event (default: the module logger).
    skip_if_done : bool
        Claim the run's identity first (:mod:`training.claiming`): when an identical run is
        completed or being trained, return a :class:`~training.claiming.Deferred` naming it and
        train nothing. Not with ``resume``.
    code : mapping, optional
        ``{"commit", "dirty", ...}`` of the code (default: :func:`tracking.gitinfo.detect_git`
        of the working directory); recorded with the run and part of its identity.

    Raises
    ------
    TrainingError
        Bad data, features, checkpoint or device. Nothing is recorded when this happens before
        the loop starts (a resumed run keeps its status); the run is recorded as ``failed``
        when it happens later.
    ValueError
        A bad option (nothing is recorded).
    """
    from tracking import Tracker
    from tracking.gitinfo import detect_git

    if skip_if_done and resume is not None:
        raise ValueError("--skip-if-done applies to new runs, not to --resume")
    started = time.perf_counter()
    log = _LogCapture(echo)
    code = detect_git() if code is None else dict(code)
    claim = RunClaim(settings, code=code, echo=log.say) if skip_if_done else None
    with log.attached(), Tracker(settings) as tracker, _torch_threads_restored():
        plan = plan_run(settings, tracker, config, resume=resume, overrides=overrides)
        if plan.resumed:
            log.say(
                f"resuming experiment {plan.resume_id} from {plan.checkpoint_path} "
                f"(epoch {plan.checkpoint.epoch})"
            )
        result = _run(settings, tracker, plan, log, progress, _Identity(code, claim))
    if isinstance(result, TrainResult):
        result.duration_s = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class _Identity:
    """The code a run records, and its ``--skip-if-done`` claim (None without the option)."""

    code: dict
    claim: RunClaim | None


@dataclass
class _Parts:
    """Everything a run computes with, built by :mod:`training.prepare`."""

    config: TrainConfig
    challenge: ChallengeConfig
    device: torch.device
    data: RunData
    features: RunFeatures
    model: RunModel
    resumed_from: int | None  # the checkpoint's epoch when resuming


def _run(
    settings, tracker, plan: RunPlan, log: _LogCapture, progress: bool, identity: _Identity
) -> TrainResult | Deferred:
    config = plan.config
    challenge = get_challenge(config.challenge)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    share_cores_with_workers(device, config.workers)
    data = prepare_data(config, challenge, plan.checkpoint)
    try:
        features = prepare_features(settings, config, data.split, plan.checkpoint)
        try:
            claim = identity.claim
            if claim is not None:  # claimed once the snapshot the run reads is known
                deferred = claim.acquire(config, features.record.get("snapshot_id"))
                if deferred is not None:
                    return deferred
            with contextlib.nullcontext() if claim is None else claim.holding():
                model = prepare_model(
                    config, challenge, data, features.n_features, device, plan.checkpoint
                )
                resumed_from = None if plan.checkpoint is None else plan.checkpoint.epoch
                parts = _Parts(config, challenge, device, data, features, model, resumed_from)
                run = _open_run(tracker, plan, parts, identity)
                return _record_and_fit(settings, run, parts, log, progress)
        finally:
            features.close()
    finally:
        data.close()


def _open_run(tracker, plan: RunPlan, parts: _Parts, identity: _Identity):
    """The tracking run: the resumed experiment, or a new one with its config and data."""
    if plan.resumed:
        return tracker.resume_run(plan.resume_id)
    config, challenge = parts.config, parts.challenge
    claim = identity.claim
    return tracker.start_run(
        config.default_name(),
        config.challenge,
        model=parts.model.info,
        config={
            "train": config.to_dict(),
            "challenge": dataclasses.asdict(challenge),
            "lr": config.lr or challenge.lr,
            "loss": challenge.loss,
            "optimizer": challenge.optimizer,
            "scheduler": "cosine",
            "primary_metric": challenge.primary_metric,
            "device": str(parts.device),
        },
        data=parts.data.summary(),
        features=parts.features.record,
        tags=list(config.tags),
        notes=config.notes,
        code=identity.code,
        experiment_id=None if claim is None else claim.experiment_id,
    )


def _record_and_fit(settings, run, parts: _Parts, log: _LogCapture, progress: bool) -> TrainResult:
    """Run the loop inside ``run`` (completed/failed/stopped) with live updates on Redis."""
    experiment_id = str(run.id)
    state = parts.model.state
    live = LivePublisher(settings.redis_url, experiment_id).start()
    status = FAILED
    try:
        with run:
            log.say(_start_line(experiment_id, parts))
            live.publish(
                "start",
                status=RUNNING,
                epoch=state.next_epoch,
                step=state.global_step,
                challenge=parts.config.challenge,
                model=parts.config.model,
                features=parts.config.features,
                epochs=parts.config.epochs,
            )
            result = _fit(settings, run, parts, live, log, progress)
            run.set_summary(summary_metrics(result))
        status = COMPLETED
    except KeyboardInterrupt:
        status = STOPPED
        raise
    finally:
        last_epoch = state.next_epoch - 1 if state.next_epoch else None
        live.publish("end", status=status, epoch=last_epoch, step=state.global_step)
        live.close()
        try:
            run.attach_log(log.text())
        except Exception as exc:  # noqa: BLE001 - the log is a courtesy; never mask the outcome
            logger.warning("could not store the run log: %s", exc)
    result.live = live.stats()
    return result


def _start_line(experiment_id: str, parts: _Parts) -> str:
    config, split, record = parts.config, parts.data.split, parts.features.record
    features = config.features
    if parts.features.setup is not None:
        features += f" {record.get('service')} @ {record.get('snapshot_id')}"
    return (
        f"experiment {experiment_id}: Challenge {config.challenge}, {config.model} "
        f"({parts.model.info['parameters']:,} parameters), {len(split.train)} train / "
        f"{len(split.val)} val windows ({len(split.train_subjects)} / {len(split.val_subjects)} "
        f"subjects), features {features}, device {parts.device}"
    )


def _fit(settings, run, parts: _Parts, live, log: _LogCapture, progress: bool) -> TrainResult:
    config, model = parts.config, parts.model
    experiment_id = str(run.id)
    train_loader, val_loader = make_loaders(
        config, parts.data, parts.features.collate, parts.device
    )
    fit(
        model.model,
        train_loader,
        val_loader,
        optimizer=model.optimizer,
        loss_fn=parts.challenge.make_loss(),
        device=parts.device,
        epochs=config.epochs,
        state=model.state,
        scale=parts.data.scale,
        primary_metric=parts.challenge.primary_metric,
        scheduler=model.scheduler,
        recorder=run,
        live=live,
        save_checkpoint=_CheckpointWriter(
            run, parts, checkpoint_dir(settings.data_dir, experiment_id)
        ),
        on_epoch_start=lambda e: train_loader.sampler.set_epoch(e),
        log_every=config.log_every,
        progress=progress,
        echo=log.say,
    )
    return make_result(
        experiment_id,
        config,
        parts.challenge,
        model.state,
        best_checkpoint=run.best_checkpoint(),
        resumed_from=parts.resumed_from,
        data_info=parts.data.summary(),
        feature_record=parts.features.record,
    )


class _CheckpointWriter:
    """``save_checkpoint`` of :func:`training.loop.fit`: writes the epoch's file and records it."""

    def __init__(self, run, parts: _Parts, directory: Path) -> None:
        self.run = run
        self.parts = parts
        self.directory = directory

    def __call__(self, epoch: int, metrics: dict, is_best: bool, loop_state: LoopState) -> Path:
        parts = self.parts
        checkpoint = Checkpoint(
            experiment_id=str(self.run.id),
            epoch=epoch,
            model_info=parts.model.info,
            model_state=parts.model.model.state_dict(),
            optimizer_state=parts.model.optimizer.state_dict(),
            scheduler_state=parts.model.scheduler.state_dict(),
            loop_state=loop_state,
            torch_rng_state=torch.get_rng_state(),
            channel_stats=parts.data.stats,
            feature_scaler=parts.features.scaler,
            feature_columns=parts.features.columns,
            target_scale=parts.data.scale,
            val_subjects=list(parts.data.split.val_subjects),
            config=parts.config.to_dict(),
            metrics=metrics,
        )
        path = save_checkpoint(checkpoint, checkpoint_file(self.directory, epoch))
        self.run.log_checkpoint(
            path,
            epoch=epoch,
            metrics=metrics,
            is_best=is_best,
            upload=parts.config.upload_checkpoints,
        )
        return path


__all__ = ["train"]
