"""``eegfs runs``: list, show, compare, rank and follow tracked training runs; replay the spool.

Each command parses its arguments, calls one function of the ``tracking`` package and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from eegfs.commands import console
from eegfs.commands.display import cell, dumps_json, status_markup
from services.settings import Settings
from tracking.status import ALL_STATUSES, DEFAULT_STALE_AFTER_S


def _parse_config(values: tuple[str, ...]) -> dict[str, Any]:
    """``--config KEY=VALUE`` options as a dict; VALUE is JSON when it parses, else text."""
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE, e.g. batch_size=64", param_hint="--config"
            )
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@click.group()
def runs() -> None:
    """Tracked training runs in MongoDB (database MONGO_DB, default eeg2025)."""


@runs.command("list")
@click.option("--challenge", type=click.Choice(["1", "2"]), help="Only this EEG2025 challenge.")
@click.option(
    "--status",
    type=click.Choice(ALL_STATUSES),
    help="Reported status (stale = running without heartbeat).",
)
@click.option("--tag", "tags", multiple=True, help="Runs having this tag (repeat: all of them).")
@click.option("--name", help="Case-insensitive substring of the run name.")
@click.option(
    "--config",
    "config",
    multiple=True,
    metavar="KEY=VALUE",
    help="Config field equals VALUE (JSON, else text); dotted keys reach nested values.",
)
@click.option(
    "--metric",
    "metric_filters",
    multiple=True,
    metavar="EXPR",
    help="Metric range on summary (else last epoch): 'val_loss<0.5', '0.1<=val_loss<0.3'.",
)
@click.option(
    "--show-metric", default="val_loss", show_default=True, help="Metric shown in the table."
)
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="At most N runs (0: all).",
)
@click.option(
    "--stale-after",
    default=DEFAULT_STALE_AFTER_S,
    type=click.FloatRange(min=0, min_open=True),
    show_default=True,
    help="Seconds without heartbeat before a run is stale.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON documents instead of a table.")
@click.pass_obj
def runs_list(
    settings: Settings,
    challenge,
    status,
    tags,
    name,
    config,
    metric_filters,
    show_metric,
    limit,
    stale_after,
    as_json,
) -> None:
    """List runs, newest first.

    \b
    Examples:
      eegfs runs list --challenge 2 --status completed
      eegfs runs list --tag sweep --config optimizer=Adamax --metric 'val_loss<0.5'
    """
    from rich.table import Table

    from tracking.database import open_database
    from tracking.queries import parse_metric_filter, run_metric, search_runs

    metrics = dict(parse_metric_filter(m) for m in metric_filters)
    with open_database(settings) as db:
        found = search_runs(
            db,
            challenge=int(challenge) if challenge else None,
            status=status,
            tags=tags,
            name=name,
            config=_parse_config(config),
            metrics=metrics,
            limit=limit,
            stale_after_s=stale_after,
        )
    if as_json:
        click.echo(dumps_json(found))
        return
    table = Table(title=f"{len(found)} run(s) in {settings.mongo_db}")
    table.add_column("id", no_wrap=True, min_width=24)
    for column in (
        "name",
        "ch",
        "status",
        "started (UTC)",
        "last epoch",
        show_metric,
        "tags",
        "host",
    ):
        table.add_column(column)
    for doc in found:
        last = doc.get("last_epoch")
        table.add_row(
            str(doc["_id"]),
            doc.get("name", ""),
            cell(doc.get("challenge")),
            status_markup(doc["status"]),
            cell(doc.get("started_at")),
            cell(last),
            cell(run_metric(doc, show_metric)),
            cell(doc.get("tags")),
            cell(doc.get("host")),
        )
    console().print(table)


@runs.command("show")
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full history as JSON.")
@click.pass_obj
def runs_show(settings: Settings, experiment_id: str, as_json: bool) -> None:
    """Everything about one run: document, epochs, checkpoints, step metrics, model versions."""
    from tracking.database import open_database
    from tracking.queries import run_history

    with open_database(settings) as db:
        history = run_history(db, experiment_id)
    if as_json:
        click.echo(dumps_json(history))
        return
    out = console()
    _print_experiment(out, history["experiment"])
    _print_epochs_and_checkpoints(out, history)
    steps = history["steps"]
    span = f", steps {steps[0]['step']}..{steps[-1]['step']}" if steps else ""
    out.print(f"step metrics: {len(steps)} point(s){span}")
    for v in history["model_versions"]:
        out.print(f"registered as model {v['name']} v{v['version']}")


def _print_experiment(out, exp: dict[str, Any]) -> None:
    stored = exp.get("original_status") or exp.get("stored_status")
    out.print(
        f"[bold]{exp.get('name')}[/]  {exp['_id']}  challenge {exp.get('challenge')}  "
        f"{status_markup(exp['status'])}" + (f" (stored: {stored})" if stored else "")
    )
    for key in ("started_at", "ended_at", "heartbeat", "host", "created_by", "tags", "notes"):
        out.print(f"  {key:<11} {cell(exp.get(key))}")
    for key in ("model", "data", "features", "code", "config", "summary"):
        plain = json.loads(dumps_json(exp.get(key) or {}))
        out.print(f"  {key:<11} {json.dumps(plain, sort_keys=True)}")
    if exp.get("error"):
        out.print(f"  [red]error[/]       {exp['error']}")
    if exp.get("legacy"):
        legacy = exp["legacy"]
        out.print(
            f"  legacy      {legacy.get('table')} id {legacy.get('id')} from {legacy.get('path')} "
            f"(timestamps read as {legacy.get('timezone_assumed')})"
        )


def _print_epochs_and_checkpoints(out, history: dict[str, Any]) -> None:
    from rich.table import Table

    names = sorted({m for e in history["epochs"] for m in e.get("metrics", {})})
    epochs = Table("epoch", *names, "logged (UTC)", title="epochs")
    for e in history["epochs"]:
        epochs.add_row(
            str(e["epoch"]), *(cell(e["metrics"].get(n)) for n in names), cell(e.get("logged_at"))
        )
    out.print(epochs)
    ckpts = Table(
        "id", "epoch", "best", "metrics", "size", "sha256", "GridFS", "path", title="checkpoints"
    )
    for c in history["checkpoints"]:
        ckpts.add_row(
            str(c["_id"]),
            cell(c.get("epoch")),
            "yes" if c.get("is_best") else "",
            json.dumps(c.get("metrics") or {}),
            cell(c.get("size_bytes")),
            (c.get("sha256") or c.get("checksum_status") or "-")[:16],
            c.get("upload_status") or "-",
            c.get("path") or "-",
        )
    out.print(ckpts)


@runs.command("compare")
@click.argument("experiment_ids", nargs=-1, required=True)
@click.option("--metric", "metrics", multiple=True, help="Metric curves to show (default: all).")
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also save the curves as a PNG."
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_obj
def runs_compare(settings: Settings, experiment_ids, metrics, plot, as_json) -> None:
    """Config differences and metric curves of two or more runs, side by side."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.queries import compare_runs

    with open_database(settings) as db:
        result = compare_runs(db, list(experiment_ids), metrics=list(metrics) or None)
    if as_json:
        click.echo(dumps_json(result))
        return
    out = console()
    heads = [f"{r.get('name')}\n{str(r['_id'])[-8:]}" for r in result["runs"]]
    diff = Table("field", *heads, title=f"differences ({len(result['same'])} fields identical)")
    for key, values in result["differences"].items():
        diff.add_row(key, *(cell(v) for v in values))
    diff.add_row("status", *(status_markup(r["status"]) for r in result["runs"]))
    out.print(diff)
    summary = Table("summary", *heads)
    for key, values in result["summary"].items():
        summary.add_row(key, *(cell(v) for v in values))
    out.print(summary)
    for name, curve in result["curves"].items():
        table = Table("epoch", *heads, title=name)
        for i, epoch in enumerate(curve["epochs"]):
            table.add_row(str(epoch), *(cell(values[i]) for values in curve["values"]))
        out.print(table)
    if plot:
        from tracking.plots import plot_comparison

        out.print(f"curves written to {plot_comparison(result, plot, list(metrics) or None)}")


@runs.command("best")
@click.option(
    "--metric",
    default="val_loss",
    show_default=True,
    help="Metric to rank by (summary, else last epoch).",
)
@click.option(
    "-n", "n", default=5, show_default=True, type=click.IntRange(min=1), help="Runs per challenge."
)
@click.option("--challenge", type=click.Choice(["1", "2"]), help="Only this challenge.")
@click.option(
    "--max", "maximize", is_flag=True, help="Higher is better (default: lower is better)."
)
@click.option("--status", type=click.Choice(ALL_STATUSES), help="Only runs with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs_best(settings: Settings, metric, n, challenge, maximize, status, as_json) -> None:
    """The N best runs of each challenge by a metric (NaN and missing values left out)."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.queries import best_runs

    with open_database(settings) as db:
        best = best_runs(
            db,
            metric=metric,
            n=n,
            challenge=int(challenge) if challenge else None,
            mode="max" if maximize else "min",
            status=status,
        )
    if as_json:
        click.echo(dumps_json({str(k): v for k, v in best.items()}))
        return
    if not best:
        click.echo(f"no run has a numeric {metric!r}")
    for ch, docs in best.items():
        table = Table(
            "rank",
            "id",
            "name",
            metric,
            "status",
            "started (UTC)",
            "best checkpoint",
            title=f"challenge {ch}: best {len(docs)} by {metric} ({'max' if maximize else 'min'})",
        )
        for rank, doc in enumerate(docs, start=1):
            best_ckpt = doc.get("best_checkpoint") or {}
            table.add_row(
                str(rank),
                str(doc["_id"]),
                doc.get("name", ""),
                cell(doc["metric_value"]),
                status_markup(doc["status"]),
                cell(doc.get("started_at")),
                f"epoch {best_ckpt['epoch']}" if best_ckpt else "-",
            )
        console().print(table)


@runs.command("watch")
@click.argument("experiment_id", required=False)
@click.option("--poll", is_flag=True, help="Poll instead of using a change stream.")
@click.option(
    "--interval",
    default=1.0,
    type=click.FloatRange(min=0.01),
    show_default=True,
    help="Polling interval in seconds.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds.",
)
@click.pass_obj
def runs_watch(settings: Settings, experiment_id, poll, interval, timeout) -> None:
    """Follow new epochs live (one run until it finishes, or every run until Ctrl-C).

    Uses a MongoDB change stream; falls back to polling where change streams are unavailable.
    """
    from tracking.database import open_database
    from tracking.watch import watch_epochs

    with open_database(settings) as db:
        try:
            for doc in watch_epochs(
                db,
                experiment_id,
                use_change_stream=False if poll else None,
                poll_interval_s=interval,
                timeout_s=timeout,
            ):
                metrics = "  ".join(
                    f"{k}={cell(v)}" for k, v in sorted(doc.get("metrics", {}).items())
                )
                click.echo(
                    f"{cell(doc.get('logged_at'))}  run {doc['experiment_id']}  epoch {doc['epoch']}  {metrics}"
                )
        except KeyboardInterrupt:
            pass


@runs.command("sync")
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Spool directory [default: <EEGFS_DATA_DIR>/tracking/spool].",
)
@click.pass_obj
def runs_sync(settings: Settings, spool_dir) -> None:
    """Replay tracking writes spooled while MongoDB was unreachable (idempotent)."""
    from tracking.sync import sync_spool

    report = sync_spool(settings, spool_dir, progress=True)
    click.echo(
        f"replayed {report.applied} write(s) from {len(report.replayed_files)} spool file(s) in {report.spool_dir}"
    )
    if report.rejected:
        click.echo(
            f"{report.rejected} write(s) rejected by MongoDB: see rejected-*.jsonl in {report.spool_dir}"
        )
    for path in report.busy_files:
        click.echo(f"skipped {path}: a running tracker holds it and will replay it itself")


def register(cli: click.Group) -> None:
    from eegfs.commands.reproduce import reproduce

    runs.add_command(reproduce)
    cli.add_command(runs)


__all__ = ["register", "runs"]
