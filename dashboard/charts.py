"""Plotly figures of the pages: pure functions from DataFrames to figures (no I/O).

Every curve keeps the color its run has for the whole session (see
:func:`dashboard.compare.assign_colors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.run_detail import BASELINE_METRICS, LOSS_METRICS, LR_METRIC, NRMSE_METRICS

#: Height of one chart panel in pixels.
PANEL_HEIGHT = 260
_LINE_STYLES = ("solid", "dot", "dash", "dashdot")


def _layout(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        hovermode="x unified",
        uirevision="keep",  # zoom and hidden traces survive live updates
    )
    return fig


def epoch_curves_figure(epochs: pd.DataFrame, color: str) -> go.Figure:
    """Three panels over epochs: train/val loss; val NRMSE (window and subject level) with the
    mean predictor's NRMSE as a dashed baseline; learning rate."""
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("loss", "validation NRMSE (mean predictor dashed)", "learning rate"),
        horizontal_spacing=0.07,
    )
    x = epochs.get("epoch", [])
    for i, name in enumerate(LOSS_METRICS):
        if name in epochs:
            fig.add_trace(_line(x, epochs[name], name, color, _LINE_STYLES[i]), row=1, col=1)
    for i, name in enumerate(NRMSE_METRICS):
        if name in epochs:
            fig.add_trace(_line(x, epochs[name], name, color, _LINE_STYLES[i]), row=1, col=2)
    for name in BASELINE_METRICS:
        if name in epochs:
            trace = _line(x, epochs[name], name, "#888888", "dash")
            fig.add_trace(trace, row=1, col=2)
    if LR_METRIC in epochs:
        fig.add_trace(_line(x, epochs[LR_METRIC], "lr (epoch)", color, "solid"), row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, PANEL_HEIGHT + 80)


def step_curves_figure(steps: pd.DataFrame, color: str) -> go.Figure:
    """Training loss per step (and learning rate on a second axis when logged)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if "loss" in steps:
        fig.add_trace(_line(steps["step"], steps["loss"], "loss (step)", color, "solid"))
    if LR_METRIC in steps:
        fig.add_trace(
            _line(steps["step"], steps[LR_METRIC], "lr (step)", "#888888", "dot"),
            secondary_y=True,
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="lr", secondary_y=True)
    return _layout(fig, PANEL_HEIGHT)


def _line(x, y, name: str, color: str, dash: str) -> go.Scatter:
    return go.Scatter(
        x=list(x),
        y=list(y),
        name=name,
        mode="lines+markers",
        marker={"size": 4},
        line={"color": color, "dash": dash},
    )


def compare_curves_figure(
    curve: pd.DataFrame, names: Mapping[str, str], colors: Mapping[str, str], metric: str
) -> go.Figure:
    """One metric over epochs, one line per run (column = run id), in each run's color."""
    fig = go.Figure()
    for run_id in [c for c in curve.columns if c != "epoch"]:
        fig.add_trace(
            _line(curve["epoch"], curve[run_id], names.get(run_id, run_id), colors[run_id], "solid")
        )
    fig.update_layout(title=metric, xaxis_title="epoch")
    return _layout(fig, PANEL_HEIGHT + 40)


def parallel_figure(frame: pd.DataFrame) -> go.Figure:
    """Parallel coordinates: one axis per hyperparameter, then best NRMSE (the line color)."""
    dims = []
    for column in [c for c in frame.columns if c not in ("id", "name")]:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values):
            dims.append({"label": column, "values": values.tolist()})
        else:
            categories = sorted(values.astype(str).unique())
            codes = values.astype(str).map({c: i for i, c in enumerate(categories)})
            dims.append(
                {
                    "label": column,
                    "values": codes.tolist(),
                    "tickvals": list(range(len(categories))),
                    "ticktext": categories,
                }
            )
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": frame["best_nrmse"].tolist(),
                "colorscale": "Viridis_r",
                "showscale": True,
                "colorbar": {"title": "best NRMSE"},
            },
            dimensions=dims,
        )
    )
    return _layout(fig, 420)


def distribution_figure(dist: pd.DataFrame, feature: str, kind: str = "violin") -> go.Figure:
    """A feature's distribution over subjects, per release (violin or overlaid histograms)."""
    fig = go.Figure()
    for release, group in dist.groupby("release", sort=True):
        if kind == "histogram":
            fig.add_trace(go.Histogram(x=group["value"], name=str(release), opacity=0.6))
        else:
            fig.add_trace(
                go.Violin(
                    y=group["value"],
                    name=str(release),
                    box_visible=True,
                    points="all",
                    meanline_visible=True,
                    text=group["subject_id"],
                )
            )
    if kind == "histogram":
        fig.update_layout(barmode="overlay", xaxis_title=feature, yaxis_title="subjects")
    else:
        fig.update_layout(yaxis_title=feature, xaxis_title="release")
    return _layout(fig, 360)


def band_profile_figure(profile: pd.DataFrame, subject_id: str, release: str) -> go.Figure:
    """The subject's relative band power per band, against the release mean ± 1 std."""
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=profile.index.tolist(),
            y=profile["release_mean"].tolist(),
            error_y={"type": "data", "array": profile["release_std"].fillna(0).tolist()},
            name=f"{release} mean ± std",
            marker_color="#BBBBBB",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=profile.index.tolist(),
            y=profile["subject"].tolist(),
            name=subject_id,
            mode="markers+lines",
            marker={"size": 10, "color": "#EF553B"},
        )
    )
    fig.update_layout(yaxis_title="relative band power (channel mean)", xaxis_title="band")
    return _layout(fig, 340)


def bar_figure(labels: Sequence[str], values: Sequence[float], title: str) -> go.Figure:
    """A plain bar chart (window quality per subject)."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), marker_color="#EF553B"))
    fig.update_layout(title=title)
    return _layout(fig, 300)
