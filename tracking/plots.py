"""Metric curves of compared runs as a PNG (matplotlib, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.files import atomic_path


def plot_comparison(
    comparison: dict[str, Any], path: Path, metrics: list[str] | None = None
) -> Path:
    """One panel per metric, one line per run, epochs on x; written atomically to ``path``.

    ``comparison`` is what :func:`tracking.queries.compare_runs` returns.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from exc
    names = metrics or sorted(comparison["curves"])
    if not names:
        raise ValueError("the compared runs have no epoch metrics to plot")
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 3 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        curve = comparison["curves"][name]
        for run, values in zip(comparison["runs"], curve["values"], strict=True):
            points = [(e, v) for e, v in zip(curve["epochs"], values, strict=True) if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=f"{run['name']} ({str(run['_id'])[-6:]})")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
