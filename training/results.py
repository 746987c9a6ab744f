"""What a training run reports: :class:`TrainResult`, the summary metrics and the printed summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from training.challenges import ChallengeConfig
from training.config import TrainConfig
from training.loop import LoopState

#: Challenge 2 goal of the demo (issue 5, point 9): subject-level validation NRMSE at most this.
DEMO_GOAL_NRMSE = {2: 0.8}


@dataclass
class TrainResult:
    """What :func:`training.train` reports."""

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


def make_result(
    experiment_id: str,
    config: TrainConfig,
    challenge: ChallengeConfig,
    state: LoopState,
    *,
    best_checkpoint: dict | None,
    resumed_from: int | None,
    data_info: dict,
    feature_record: dict,
) -> TrainResult:
    """The result of a run whose loop ended in ``state`` (``duration_s`` and ``live`` unset)."""
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), None) or {}
    mean_key = (
        "val_subject_mean_predictor_nrmse"
        if challenge.primary_metric == "val_subject_nrmse"
        else "val_mean_predictor_nrmse"
    )
    best_value = best.get(challenge.primary_metric)
    best_value = math.nan if best_value is None else float(best_value)
    goal = DEMO_GOAL_NRMSE.get(config.challenge)
    return TrainResult(
        experiment_id=experiment_id,
        challenge=config.challenge,
        primary_metric=challenge.primary_metric,
        best_epoch=state.best_epoch,
        best_value=best_value,
        mean_predictor_value=float(best.get(mean_key) or math.nan),
        best_checkpoint=None if best_checkpoint is None else best_checkpoint["path"],
        last_epoch=state.history[-1]["epoch"] if state.history else None,
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


def summary_metrics(result: TrainResult) -> dict[str, float]:
    """The finite figures stored as the experiment's ``summary``."""
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
    resumed = (
        f" (resumed after epoch {result.resumed_from_epoch})"
        if result.resumed_from_epoch is not None
        else ""
    )
    lines = [
        f"experiment      {result.experiment_id}",
        f"epochs          {result.epochs_run} run{resumed}, last epoch {result.last_epoch}, "
        f"{result.duration_s:.1f} s",
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
    lines.append(_features_line(result.features))
    lines.append(f"checkpoint      {result.best_checkpoint or '-'} (best)")
    lines.append(f"details         eegfs runs show {result.experiment_id}")
    return "\n".join(lines)


def format_outcome(result) -> str:
    """What ``eegfs train`` prints: the run's summary, or the run ``--skip-if-done`` defers to."""
    from training.claiming import Deferred, format_deferred

    if isinstance(result, Deferred):
        return format_deferred(result)
    return format_summary(result)


def _features_line(feats: dict) -> str:
    if feats.get("mode") == "none":
        return "features        none"
    return (
        f"features        {feats.get('mode')} {feats.get('service')} snapshot "
        f"{feats.get('snapshot_id')} ({feats.get('n_columns')} columns)"
    )


__all__ = [
    "DEMO_GOAL_NRMSE",
    "TrainResult",
    "format_outcome",
    "format_summary",
    "make_result",
    "summary_metrics",
]
