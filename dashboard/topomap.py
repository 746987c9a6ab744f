"""Scalp topography of per-channel relative band power, with MNE's built-in montage.

``GSN-HydroCel-129`` ships with MNE (no download); its channel names are ``E1``..``E128`` and
``Cz``, as the project stores them (``E129`` is accepted as an alias of ``Cz``). Channels
without a finite value (flat ones: Cz, the HBN reference, always is) are left out of a band's
map rather than drawn as zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.errors import DashboardError

MONTAGE = "GSN-HydroCel-129"
#: Channels a band's map needs at least (MNE interpolates between them).
MIN_CHANNELS = 4


def montage_positions(channels: list[str], montage_name: str = MONTAGE) -> list[str]:
    """``channels`` renamed to the montage's names (``E129`` -> ``Cz``), checked against it."""
    import mne

    montage = mne.channels.make_standard_montage(montage_name)
    known = set(montage.ch_names)
    renamed = ["Cz" if c == "E129" else c for c in channels]
    unknown = [c for c in renamed if c not in known]
    if len(unknown) == len(renamed):
        raise DashboardError(
            f"none of the channel names ({', '.join(renamed[:4])}, ...) is in MNE's {montage_name} "
            "montage (E1..E128, Cz): the topography needs the EGI 129-channel layout"
        )
    return renamed


def topomap_figure(topo: pd.DataFrame, montage_name: str = MONTAGE):
    """One scalp map per band (columns of ``topo``; index = channel names), each with its own
    color scale. Returns a matplotlib Figure (not registered with pyplot: thread-safe)."""
    import mne
    from matplotlib.figure import Figure

    names = montage_positions([str(c) for c in topo.index], montage_name)
    montage = mne.channels.make_standard_montage(montage_name)
    known = set(montage.ch_names)
    bands = list(topo.columns)
    fig = Figure(figsize=(2.6 * max(1, len(bands)), 2.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(bands))))
    for ax, band in zip(axes, bands, strict=False):
        values = topo[band].to_numpy(dtype=np.float64)
        keep = [i for i, n in enumerate(names) if n in known and np.isfinite(values[i])]
        ax.set_title(band)
        if len(keep) < MIN_CHANNELS:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center")
            ax.set_axis_off()
            continue
        info = mne.create_info([names[i] for i in keep], sfreq=100.0, ch_types="eeg")
        info.set_montage(montage)
        image, _ = mne.viz.plot_topomap(
            values[keep], info, axes=ax, show=False, cmap="viridis", contours=4, sensors=True
        )
        fig.colorbar(image, ax=ax, shrink=0.7, label="relative power")
    return fig
