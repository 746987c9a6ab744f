"""The training loop, written against two small protocols: a run recorder and a live sink.

:class:`RunRecorder` is what :class:`tracking.Run` provides (``log_epoch``, ``log_metrics``,
``log_checkpoint``, ``heartbeat``, ``set_summary``); :class:`LiveSink` is what
:class:`training.live.LivePublisher` provides. The loop knows nothing of MongoDB or Redis, so it
can be driven by anything with these methods.

Targets are standardised with the training mean and std for the loss (so one learning rate suits
response times in seconds and scores alike); reported losses are converted back to the target's
unit (L1: same unit, MSE: squared unit).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from training.metrics import evaluate

logger = logging.getLogger(__name__)


class RunRecorder(Protocol):
    """Where a run is recorded (``tracking.Run`` satisfies it)."""

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_checkpoint(
        self,
        path: Path,
        *,
        epoch: int,
        metrics: Mapping[str, float],
        is_best: bool = False,
        upload: bool = False,
    ): ...

    def heartbeat(self) -> None: ...

    def set_summary(self, metrics: Mapping[str, float]) -> None: ...


class LiveSink(Protocol):
    """Where live updates go (``training.live.LivePublisher`` satisfies it); must not block."""

    def publish(
        self,
        kind: str,
        *,
        epoch: int | None = None,
        step: int | None = None,
        status: str | None = None,
        **metrics,
    ) -> bool: ...


@dataclass
class LoopState:
    """Progress of a run; saved in every checkpoint so ``--resume`` continues where it stopped."""

    next_epoch: int = 0
    global_step: int = 0
    best_metric: float = math.inf
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "next_epoch": self.next_epoch,
            "global_step": self.global_step,
            "best_metric": None if not math.isfinite(self.best_metric) else self.best_metric,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> LoopState:
        best = d.get("best_metric")
        return cls(
            next_epoch=int(d["next_epoch"]),
            global_step=int(d["global_step"]),
            best_metric=math.inf if best is None else float(best),
            best_epoch=d.get("best_epoch"),
            history=list(d.get("history", [])),
        )


@dataclass(frozen=True)
class TargetScale:
    """Training-target mean and std; the model predicts (y - mean) / std."""

    mean: float
    std: float

    def to_model(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean) / self.std

    def from_model(self, pred: np.ndarray) -> np.ndarray:
        return pred * self.std + self.mean


class _LookupMeter:
    """Feature lookup time and cache counters reported by the collate step of each process.

    Cache counters arrive cumulative per process (each DataLoader worker has its own client and
    cache); :meth:`start_epoch` snapshots them so :meth:`summary` reports the epoch's share.
    """

    def __init__(self) -> None:
        self._cumulative: dict[int, tuple[int, int]] = {}
        self._at_epoch_start: dict[int, tuple[int, int]] = {}
        self.start_epoch()

    def start_epoch(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self.failed = 0
        self.missing_subjects = 0
        self._at_epoch_start = dict(self._cumulative)

    def add(self, lookup: Mapping | None) -> None:
        if not lookup:
            return
        self.seconds += float(lookup["seconds"])
        self.batches += 1
        self.failed += int(lookup["failed"])
        self.missing_subjects += int(lookup["missing_subjects"])
        stats = lookup.get("stats")
        if stats:
            self._cumulative[int(lookup["pid"])] = (int(stats["hits"]), int(stats["misses"]))

    def hits_misses(self) -> tuple[int, int]:
        """Cache hits and misses since the start of the epoch, over all processes."""
        hits = misses = 0
        for pid, (h, m) in self._cumulative.items():
            h0, m0 = self._at_epoch_start.get(pid, (0, 0))
            hits += h - h0
            misses += m - m0
        return hits, misses

    def summary(self) -> dict[str, float]:
        if not self.batches:
            return {}
        hits, misses = self.hits_misses()
        out = {
            "feature_lookup_ms": 1000.0 * self.seconds / self.batches,
            "feature_lookup_failures": float(self.failed),
            "feature_missing_subjects": float(self.missing_subjects),
        }
        if hits + misses:
            out["feature_cache_hit_rate"] = hits / (hits + misses)
        return out


def _to_device(
    batch: dict, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    non_blocking = device.type == "cuda"
    x = batch["x"].to(device, non_blocking=non_blocking)
    y = batch["y"].to(device, non_blocking=non_blocking)
    feats = batch.get("features")
    if feats is not None:
        feats = feats.to(device, non_blocking=non_blocking)
    return x, y, feats


def _loss_scale(loss_fn: nn.Module, scale: TargetScale) -> float:
    return scale.std**2 if isinstance(loss_fn, nn.MSELoss) else scale.std


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    scale: TargetScale,
    loss_fn: nn.Module | None = None,
    meter: _LookupMeter | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Predictions over ``loader`` in the target's unit.

    Returns
    -------
    y_true, y_pred : np.ndarray, shape (n,)
    subjects : np.ndarray, shape (n,), str
    loss : float
        Mean ``loss_fn`` in the target's unit (NaN without ``loss_fn``).
    """
    model.eval()
    ys, preds, subjects = [], [], []
    total, count = 0.0, 0
    for batch in loader:
        if meter is not None:
            meter.add(batch.get("lookup"))
        x, y, feats = _to_device(batch, device)
        out = model(x, feats).squeeze(-1)
        if loss_fn is not None:
            total += loss_fn(out, scale.to_model(y)).item() * y.shape[0]
            count += y.shape[0]
        preds.append(out.float().cpu().numpy())
        ys.append(batch["y"].numpy())
        subjects.extend(batch["subjects"])
    y_pred = scale.from_model(np.concatenate(preds).astype(np.float64))
    loss = total / count * _loss_scale(loss_fn, scale) if count else math.nan
    return np.concatenate(ys).astype(np.float64), y_pred, np.asarray(subjects), loss


class _StepReporter:
    """Step metrics every ``log_every`` batches (recorder and live) and heartbeats."""

    def __init__(
        self,
        recorder: RunRecorder | None,
        live: LiveSink | None,
        *,
        log_every: int,
        heartbeat_s: float,
    ) -> None:
        self.recorder = recorder
        self.live = live
        self.log_every = max(1, log_every)
        self.heartbeat_s = heartbeat_s
        self.last_beat = time.monotonic()
        self.start_window()

    def start_window(self) -> None:
        self.window_start, self.window_batches = time.perf_counter(), 0

    def step(self, epoch: int, step: int, loss: float, lr: float, meter: _LookupMeter, bar) -> None:
        """After training step ``step`` of ``epoch`` (loss in the target's unit)."""
        self.window_batches += 1
        if step % self.log_every == 0:
            now = time.perf_counter()
            metrics = {
                "loss": loss,
                "lr": lr,
                "batches_per_s": self.window_batches / max(now - self.window_start, 1e-9),
                **meter.summary(),
            }
            self.start_window()
            if self.recorder is not None:
                self.recorder.log_metrics(metrics, step=step)
            if self.live is not None:
                self.live.publish("step", epoch=epoch, step=step, **metrics)
            bar.set_postfix(loss=f"{loss:.3f}")
        if self.recorder is not None and time.monotonic() - self.last_beat >= self.heartbeat_s:
            self.recorder.heartbeat()
            self.last_beat = time.monotonic()


@dataclass
class _Trainer:
    """The parts of :func:`fit` that every step uses."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    device: torch.device
    scale: TargetScale

    def step(self, batch: dict, epoch: int, global_step: int) -> tuple[float, int]:
        """One optimiser step; (loss in the target's unit, samples)."""
        x, y, feats = _to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(x, feats).squeeze(-1)
        loss = self.loss_fn(out, self.scale.to_model(y))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {float(loss)} at epoch {epoch}, step {global_step}; lower "
                "the learning rate (--lr) or check the inputs for NaN"
            )
        loss.backward()
        self.optimizer.step()
        return loss.item() * _loss_scale(self.loss_fn, self.scale), int(y.shape[0])

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def _train_epoch(
    trainer: _Trainer,
    loader,
    epoch: int,
    state: LoopState,
    meter: _LookupMeter,
    reporter: _StepReporter,
    progress: bool,
) -> dict[str, float]:
    """One pass over ``loader``: ``train_loss``, ``train_s`` and ``batches_per_s``."""
    from tqdm.auto import tqdm

    trainer.model.train()
    started = time.perf_counter()
    reporter.start_window()
    total_loss, n_samples, n_batches = 0.0, 0, 0
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        leave=False,
        disable=None if progress else True,  # None: off when not a terminal
        unit="batch",
        dynamic_ncols=True,
    )
    for batch in bar:
        meter.add(batch.get("lookup"))
        batch_loss, n = trainer.step(batch, epoch, state.global_step)
        total_loss += batch_loss * n
        n_samples += n
        n_batches += 1
        state.global_step += 1
        reporter.step(epoch, state.global_step, batch_loss, trainer.lr(), meter, bar)
    seconds = time.perf_counter() - started
    return {
        "train_loss": total_loss / max(n_samples, 1),
        "train_s": seconds,
        "batches_per_s": n_batches / max(seconds, 1e-9),
    }


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    epochs: int,
    state: LoopState,
    scale: TargetScale,
    primary_metric: str,
    scheduler=None,
    recorder: RunRecorder | None = None,
    live: LiveSink | None = None,
    save_checkpoint: Callable[[int, dict, bool, LoopState], Path] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    log_every: int = 10,
    heartbeat_s: float = 10.0,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> LoopState:
    """Train from ``state.next_epoch`` up to ``epochs`` (exclusive), validating after each epoch.

    Per step: the loss, the learning rate and batches/s go to ``recorder.log_metrics`` and
    ``live`` every ``log_every`` batches. Per epoch: ``train_loss``, ``val_loss``, ``val_nrmse``
    (window level), ``val_subject_nrmse``, the mean predictor's NRMSE, ``lr``, ``duration_s``,
    ``batches_per_s`` and, with features, lookup time and cache hit rate go to
    ``recorder.log_epoch`` and ``live``; then ``save_checkpoint(epoch, metrics, is_best, state)``
    writes the checkpoint (the caller records it). ``primary_metric`` (lower is better) picks the
    best epoch.
    """
    say = echo or (lambda text: logger.info("%s", text))
    trainer = _Trainer(model, optimizer, loss_fn, device, scale)
    reporter = _StepReporter(recorder, live, log_every=log_every, heartbeat_s=heartbeat_s)
    meter = _LookupMeter()
    for epoch in range(state.next_epoch, epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        meter.start_epoch()
        started = time.perf_counter()
        trained = _train_epoch(trainer, train_loader, epoch, state, meter, reporter, progress)
        lr = trainer.lr()
        if scheduler is not None:
            scheduler.step()
        y_true, y_pred, subjects, val_loss = predict(
            model, val_loader, device, scale, loss_fn, meter
        )
        metrics = {
            "train_loss": trained["train_loss"],
            "val_loss": val_loss,
            **evaluate(y_true, y_pred, subjects, train_mean=scale.mean),
            "lr": lr,
            "duration_s": time.perf_counter() - started,
            "train_s": trained["train_s"],
            "batches_per_s": trained["batches_per_s"],
            **meter.summary(),
        }
        is_best = _end_epoch(state, epoch, metrics, primary_metric)
        if recorder is not None:
            recorder.log_epoch(epoch, metrics)
        if save_checkpoint is not None:
            save_checkpoint(epoch, metrics, is_best, state)
        if live is not None:
            live.publish(
                "epoch",
                epoch=epoch,
                step=state.global_step,
                is_best=is_best,
                best_epoch=state.best_epoch,
                **metrics,
            )
        say(_epoch_line(epoch, metrics, is_best))
    return state


def _end_epoch(state: LoopState, epoch: int, metrics: dict, primary_metric: str) -> bool:
    """Advance ``state`` past ``epoch``; whether ``epoch`` is the best so far."""
    value = metrics[primary_metric]
    is_best = math.isfinite(value) and value < state.best_metric
    if is_best:
        state.best_metric, state.best_epoch = value, epoch
    state.next_epoch = epoch + 1
    state.history.append({"epoch": epoch, **{k: _finite(v) for k, v in metrics.items()}})
    return is_best


def _epoch_line(epoch: int, metrics: dict, is_best: bool) -> str:
    return (
        f"epoch {epoch:3d}  train_loss {metrics['train_loss']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_nrmse {metrics['val_nrmse']:.3f}  "
        f"subject {metrics['val_subject_nrmse']:.3f}  "
        f"(mean predictor {metrics['val_subject_mean_predictor_nrmse']:.3f})  "
        f"{metrics['duration_s']:.1f}s{'  *best' if is_best else ''}"
    )


def _finite(value: float) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


__all__ = ["LiveSink", "LoopState", "RunRecorder", "TargetScale", "fit", "predict"]
