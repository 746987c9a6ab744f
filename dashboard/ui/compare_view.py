"""Compare page: 2-10 runs side by side (config diff, overlaid curves, final metrics), a
parallel-coordinates chart of hyperparameters against best NRMSE for the runs sharing a tag,
and the sweeps (trials, their parameters and objective, the best trial)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, compare, runs, work
from dashboard.ui.context import COMPARE_KEY, PageContext, run_colors, show_page

#: Curves drawn first when the runs have them.
PREFERRED_METRICS = ("val_subject_nrmse", "val_nrmse", "val_loss", "train_loss", "lr")


def _selection(ctx: PageContext) -> list[str]:
    from_url = [r for r in (st.query_params.get("runs") or "").split(",") if r]
    wanted = from_url or st.session_state.get(COMPARE_KEY) or []
    recent = runs.recent_runs(ctx.db, limit=200)
    labels = {r["id"]: f"{r['name']} · {r['status']} · {r['id'][-6:]}" for r in recent}
    options = list(dict.fromkeys([*wanted, *labels]))
    default = [r for r in wanted if r in options] or options[:2]
    chosen = st.multiselect(
        f"runs to compare ({compare.MIN_RUNS}-{compare.MAX_RUNS}; select them in the Runs table "
        "or here)",
        options,
        default=default[: compare.MAX_RUNS],
        format_func=lambda r: labels.get(r, r),
        max_selections=compare.MAX_RUNS,
    )
    st.session_state[COMPARE_KEY] = chosen
    if ",".join(chosen) != st.query_params.get("runs"):
        st.query_params["runs"] = ",".join(chosen)
    return chosen


def comparison(ctx: PageContext) -> None:
    chosen = _selection(ctx)
    if len(chosen) < compare.MIN_RUNS:
        st.info(f"Choose at least {compare.MIN_RUNS} runs.")
        return
    data = compare.compare_data(ctx.db, chosen)
    colors = run_colors(chosen)
    names = dict(zip(data["runs"]["id"], data["runs"]["name"], strict=True))
    st.dataframe(
        data["runs"].style.apply(lambda row: [f"color: {colors[row['id']]}"] * len(row), axis=1),
        hide_index=True,
    )
    st.markdown("#### Config differences")
    if data["differences"].empty:
        st.caption("The runs share every model, config, data, features and code value.")
    else:
        st.dataframe(data["differences"].rename(columns=names))
    st.markdown("#### Curves")
    metrics = [m for m in PREFERRED_METRICS if m in data["curves"]]
    metrics += [m for m in sorted(data["curves"]) if m not in metrics]
    shown = st.multiselect("metrics", metrics, default=metrics[:3])
    for metric in shown:
        st.plotly_chart(
            charts.compare_curves_figure(data["curves"][metric], names, colors, metric),
            key=f"compare_{metric}",
        )
    st.markdown("#### Final metrics")
    st.dataframe(data["summary"].rename(columns=names))


def parallel(ctx: PageContext) -> None:
    st.markdown("#### Hyperparameters against best NRMSE (runs sharing a tag)")
    tags = runs.tag_options(ctx.db)
    if not tags:
        st.caption("No run has a tag yet (`eegfs train --tag NAME`).")
        return
    tag = st.selectbox("tag", tags)
    frame = compare.parallel_frame(ctx.db, tag)
    if len(frame) < 2 or len(frame.columns) <= 3:
        st.caption(
            f"{len(frame)} run(s) tagged {tag!r} with a best NRMSE and no hyperparameter that "
            "differs between them: nothing to draw."
        )
        return
    st.plotly_chart(charts.parallel_figure(frame), key="parallel")
    st.caption(f"{len(frame)} runs tagged {tag!r}; one axis per config key that differs.")


def sweeps(ctx: PageContext) -> None:
    st.markdown("#### Sweeps")
    try:
        names = work.sweep_names(ctx.redis, ctx.settings)
    except Exception as exc:  # noqa: BLE001 - Redis away is reported on the Services page
        st.caption(f"unknown: Redis does not answer ({type(exc).__name__})")
        return
    if not names:
        st.caption("No sweep yet (`eegfs sweep create NAME --space SPACE.yaml`).")
        return
    name = st.selectbox("sweep", names[::-1])
    summary = work.sweep_summary(ctx.redis, ctx.settings, name)
    counts = ", ".join(f"{n} {state}" for state, n in summary["counts"].items()) or "no trial"
    st.caption(f"Objective: minimise {summary['metric']}; trials: {counts}.")
    best = summary["best"]
    if best is not None:
        st.metric(f"best ({summary['metric']}), trial {best['number']}", f"{best['value']:.4f}")
        st.json(best["params"], expanded=False)
    trials = summary["trials"]
    st.dataframe(
        trials.assign(run="run?run=" + trials["experiment_id"].fillna("")),
        hide_index=True,
        column_config={"run": st.column_config.LinkColumn("run", display_text="open")},
    )


SECTIONS = (comparison, parallel, sweeps)


def render() -> None:
    show_page("Compare", SECTIONS)
