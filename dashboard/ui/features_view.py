"""Features page: snapshots on disk and the one Redis serves, a feature's distribution and drift
between releases, a subject's scalp topography and band-power profile, window quality."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import charts, features, sources
from dashboard.topomap import MONTAGE, topomap_figure
from dashboard.ui.context import PageContext, show_page

_CHALLENGE_KEY = "features_challenge"


@st.cache_resource(show_spinner=False, max_entries=8, ttl=600)
def _subjects(features_dir: str, challenge: int, manifest_stamp: tuple) -> pd.DataFrame:
    # Keyed by the manifest's mtime and size: a new snapshot reloads. Shared and not copied
    # (cache_resource), so callers treat it as read-only.
    return features.subject_table(Path(features_dir), challenge)


def _manifest_stamp(features_dir: Path) -> tuple:
    try:
        stat = (features_dir / "manifest.json").stat()
    except FileNotFoundError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def _subject_frame(ctx: PageContext, challenge: int) -> pd.DataFrame:
    fdir = ctx.settings.features_dir
    return _subjects(str(fdir), challenge, _manifest_stamp(fdir))


def snapshots(ctx: PageContext) -> None:
    st.markdown("#### Snapshots")
    try:
        markers = features.online_markers(ctx.redis)
    except Exception as exc:  # noqa: BLE001 - Redis away: the disk part still shows
        markers = []
        st.warning(
            f"Redis at {sources.mask_uri(ctx.settings.redis_url)} does not answer "
            f"({type(exc).__name__}): what the online store serves is unknown."
        )
    served_ids: list[str] = []
    if markers:
        m = markers[0]
        served_ids = list(m.get("snapshot_ids") or [])
        st.success(
            f"Redis serves `{m.get('store_snapshot_id')}` ({len(served_ids)} snapshots), "
            f"materialized {m.get('materialized_at')}"
        )
    else:
        st.caption("Redis serves no materialization (run `eegfs features materialize`).")
    frame = features.snapshots_frame(ctx.settings.features_dir, served_ids)
    if frame.empty:
        st.info(
            f"No feature snapshot under {ctx.settings.features_dir}: build them with "
            "`eegfs features build` (or `make features`)."
        )
        return
    st.dataframe(frame, hide_index=True)


def _challenge(ctx: PageContext) -> tuple[int, pd.DataFrame] | None:
    available = [c for c in (2, 1) if not _subject_frame(ctx, c).empty]
    if not available:
        return None
    challenge = st.radio("challenge", available, horizontal=True, key=_CHALLENGE_KEY)
    return challenge, _subject_frame(ctx, challenge)


def distribution_and_drift(ctx: PageContext) -> None:
    found = _challenge(ctx)
    if found is None:
        return
    challenge, subjects = found
    names = features.scalar_features(subjects)
    releases = sorted(subjects["release"].astype(str).unique())
    st.markdown("#### Distribution per release")
    cols = st.columns([3, 1])
    default = names.index("rel_mean_alpha") if "rel_mean_alpha" in names else 0
    feature = cols[0].selectbox("feature", names, index=default)
    kind = cols[1].radio("plot", ["violin", "histogram"], horizontal=True)
    dist = features.distribution_frame(subjects, feature)
    st.plotly_chart(charts.distribution_figure(dist, feature, kind), key="feature_distribution")
    st.markdown("#### Drift between releases")
    if len(releases) < 2:
        st.caption(f"One release only ({', '.join(releases)}): no drift to measure.")
        return
    cols = st.columns(2)
    reference = cols[0].selectbox("reference release", releases, index=0)
    other = cols[1].selectbox("compared release", releases, index=1)
    drift = features.drift_table(subjects, reference, other)
    flagged = int(drift["flagged"].sum())
    st.caption(
        f"{flagged} of {len(drift)} features flagged: |SMD| > {features.DRIFT_SMD_THRESHOLD} or "
        f"KS D > {features.DRIFT_KS_THRESHOLD} (subjects of {reference} vs {other})."
    )
    st.dataframe(
        drift.style.apply(
            lambda row: ["background-color: #ffe0e0" if row["flagged"] else ""] * len(row), axis=1
        ),
        hide_index=True,
    )


def subject_view(ctx: PageContext) -> None:
    challenge = st.session_state.get(_CHALLENGE_KEY)
    if challenge is None:
        return
    subjects = _subject_frame(ctx, challenge)
    st.markdown("#### One subject: scalp topography and band-power profile")
    keys = (subjects["subject_id"] + " · " + subjects["release"].astype(str)).tolist()
    chosen = st.selectbox("subject", keys)
    subject_id, release = chosen.split(" · ")
    channels = features.channel_names(ctx.settings.features_dir, challenge)
    topo = features.topography(subjects, subject_id, release, channels)
    fig = topomap_figure(topo)
    st.pyplot(fig, clear_figure=False)
    st.caption(
        f"Per-channel relative band power (mean over the subject's good windows), MNE montage "
        f"{MONTAGE}; flat channels (Cz, the reference) are left out."
    )
    profile = features.band_profile(subjects, subject_id, release)
    st.plotly_chart(charts.band_profile_figure(profile, subject_id, release), key="band_profile")


def quality(ctx: PageContext) -> None:
    challenge = st.session_state.get(_CHALLENGE_KEY)
    if challenge is None:
        return
    frame = features.quality_frame(_subject_frame(ctx, challenge))
    st.markdown("#### Window quality")
    total, flagged = int(frame["n_windows"].sum()), int(frame["flagged"].sum())
    st.caption(
        f"{flagged:,} of {total:,} windows flagged (non-finite, or more than 10 % of the "
        "non-reference channels flat), per subject:"
    )
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "good_fraction": st.column_config.ProgressColumn(
                "good", format="%.2f", min_value=0, max_value=1
            )
        },
    )


def build_report(ctx: PageContext) -> None:
    st.markdown("#### Data-quality gates of the last build")
    report = features.build_quality(ctx.settings.features_dir)
    if report is None:
        st.caption("No build report yet (`eegfs features build` writes one).")
        return
    accepted = " (--accept-failing)" if report["accept_failing"] else ""
    st.caption(
        f"Build finished {report['finished_at']}: {report['n_held_back']} subject(s) held back, "
        f"{report['n_accepted']} accepted despite failing{accepted}. Gates: docs/features.md; "
        "the same report in a terminal: `eegfs features quality`."
    )
    st.dataframe(report["inputs"], hide_index=True)
    if report["rejected"].empty:
        st.success("Every subject passed every gate.")
    else:
        st.dataframe(report["rejected"], hide_index=True)


SECTIONS = (snapshots, build_report, distribution_and_drift, subject_view, quality)


def render() -> None:
    show_page("Features", SECTIONS)
