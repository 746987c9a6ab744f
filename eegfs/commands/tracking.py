"""Experiment tracking commands: ``eegfs runs``, ``models``, ``subjects``, ``datasets``,
``migrate-sqlite``, ``backup`` and ``restore``.

Each command parses its arguments, calls one function of the ``tracking`` package and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from eegfs.commands import console as _console
from eegfs.commands import layout_options, parse_layout
from services.settings import Settings

STATUSES = ("running", "completed", "failed", "stopped", "stale")


# --- helpers ------------------------------------------------------------------------------------
class _TrackingCommand(click.Command):
    """Turns tracking errors into a one-line message and exit status 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        from tracking.errors import TrackingError

        try:
            return super().invoke(ctx)
        except TrackingError as exc:
            raise click.ClickException(str(exc)) from exc
        except ValueError as exc:
            raise click.UsageError(str(exc), ctx) from exc


class _Group(click.Group):
    command_class = _TrackingCommand


def _dumps(value: Any) -> str:
    from bson import json_util
    from bson.json_util import RELAXED_JSON_OPTIONS

    return json.dumps(
        json.loads(json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS)), indent=2
    )


def _fmt(value: Any) -> str:
    import datetime as dt

    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


_STATUS_STYLE = {
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "stopped": "yellow",
    "stale": "magenta",
}


def _status(value: str) -> str:
    return f"[{_STATUS_STYLE.get(value, 'white')}]{value}[/]"


def _metric(doc: dict, name: str) -> Any:
    return (doc.get("summary") or {}).get(name, (doc.get("last_metrics") or {}).get(name))


def _parse_config(values: tuple[str, ...]) -> dict[str, Any]:
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


# --- runs ---------------------------------------------------------------------------------------
@click.group(cls=_Group)
def runs() -> None:
    """Tracked training runs in MongoDB (database MONGO_DB, default eeg2025)."""


@runs.command("list")
@click.option("--challenge", type=click.Choice(["1", "2"]), help="Only this EEG2025 challenge.")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
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
    default=300.0,
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
    from tracking.queries import parse_metric_filter, search_runs

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
        click.echo(_dumps(found))
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
            _fmt(doc.get("challenge")),
            _status(doc["status"]),
            _fmt(doc.get("started_at")),
            _fmt(last),
            _fmt(_metric(doc, show_metric)),
            _fmt(doc.get("tags")),
            _fmt(doc.get("host")),
        )
    _console().print(table)


@runs.command("show")
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full history as JSON.")
@click.pass_obj
def runs_show(settings: Settings, experiment_id: str, as_json: bool) -> None:
    """Everything about one run: document, epochs, checkpoints, step metrics, model versions."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.queries import run_history

    with open_database(settings) as db:
        history = run_history(db, experiment_id)
    if as_json:
        click.echo(_dumps(history))
        return
    exp = history["experiment"]
    console = _console()
    console.print(
        f"[bold]{exp.get('name')}[/]  {exp['_id']}  challenge {exp.get('challenge')}  {_status(exp['status'])}"
        + (
            f" (stored: {exp.get('original_status') or exp.get('stored_status')})"
            if exp.get("original_status") or exp.get("stored_status")
            else ""
        )
    )
    for key in ("started_at", "ended_at", "heartbeat", "host", "created_by", "tags", "notes"):
        console.print(f"  {key:<11} {_fmt(exp.get(key))}")
    for key in ("model", "data", "features", "code", "config", "summary"):
        console.print(
            f"  {key:<11} {json.dumps(json.loads(_dumps(exp.get(key) or {})), sort_keys=True)}"
        )
    if exp.get("error"):
        console.print(f"  [red]error[/]       {exp['error']}")
    if exp.get("legacy"):
        legacy = exp["legacy"]
        console.print(
            f"  legacy      {legacy.get('table')} id {legacy.get('id')} from {legacy.get('path')} "
            f"(timestamps read as {legacy.get('timezone_assumed')})"
        )
    names = sorted({m for e in history["epochs"] for m in e.get("metrics", {})})
    epochs = Table("epoch", *names, "logged (UTC)", title="epochs")
    for e in history["epochs"]:
        epochs.add_row(
            str(e["epoch"]), *(_fmt(e["metrics"].get(n)) for n in names), _fmt(e.get("logged_at"))
        )
    console.print(epochs)
    ckpts = Table(
        "id", "epoch", "best", "metrics", "size", "sha256", "GridFS", "path", title="checkpoints"
    )
    for c in history["checkpoints"]:
        ckpts.add_row(
            str(c["_id"]),
            _fmt(c.get("epoch")),
            "yes" if c.get("is_best") else "",
            json.dumps(c.get("metrics") or {}),
            _fmt(c.get("size_bytes")),
            (c.get("sha256") or c.get("checksum_status") or "-")[:16],
            c.get("upload_status") or "-",
            c.get("path") or "-",
        )
    console.print(ckpts)
    console.print(
        f"step metrics: {len(history['steps'])} point(s)"
        + (
            f", steps {history['steps'][0]['step']}..{history['steps'][-1]['step']}"
            if history["steps"]
            else ""
        )
    )
    for v in history["model_versions"]:
        console.print(f"registered as model {v['name']} v{v['version']}")


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
        click.echo(_dumps(result))
        return
    console = _console()
    heads = [f"{r.get('name')}\n{str(r['_id'])[-8:]}" for r in result["runs"]]
    diff = Table("field", *heads, title=f"differences ({len(result['same'])} fields identical)")
    for key, values in result["differences"].items():
        diff.add_row(key, *(_fmt(v) for v in values))
    diff.add_row("status", *(_status(r["status"]) for r in result["runs"]))
    console.print(diff)
    summary = Table("summary", *heads)
    for key, values in result["summary"].items():
        summary.add_row(key, *(_fmt(v) for v in values))
    console.print(summary)
    for name, curve in result["curves"].items():
        table = Table("epoch", *heads, title=name)
        for i, epoch in enumerate(curve["epochs"]):
            table.add_row(str(epoch), *(_fmt(values[i]) for values in curve["values"]))
        console.print(table)
    if plot:
        from tracking.plots import plot_comparison

        console.print(f"curves written to {plot_comparison(result, plot, list(metrics) or None)}")


@runs.command("best")
@click.option("--metric", default="val_loss", show_default=True, help="Summary metric to rank by.")
@click.option(
    "-n", "n", default=5, show_default=True, type=click.IntRange(min=1), help="Runs per challenge."
)
@click.option("--challenge", type=click.Choice(["1", "2"]), help="Only this challenge.")
@click.option(
    "--max", "maximize", is_flag=True, help="Higher is better (default: lower is better)."
)
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
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
        click.echo(_dumps({str(k): v for k, v in best.items()}))
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
                _fmt(doc["metric_value"]),
                _status(doc["status"]),
                _fmt(doc.get("started_at")),
                f"epoch {best_ckpt['epoch']}" if best_ckpt else "-",
            )
        _console().print(table)


@runs.command("watch")
@click.argument("experiment_id", required=False)
@click.option("--poll", is_flag=True, help="Poll instead of using a change stream.")
@click.option("--interval", default=1.0, show_default=True, help="Polling interval in seconds.")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
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
                    f"{k}={_fmt(v)}" for k, v in sorted(doc.get("metrics", {}).items())
                )
                click.echo(
                    f"{_fmt(doc.get('logged_at'))}  run {doc['experiment_id']}  epoch {doc['epoch']}  {metrics}"
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


# --- models -------------------------------------------------------------------------------------
@click.group(cls=_Group)
def models() -> None:
    """Model registry: named models, numbered versions, aliases (production, candidate...)."""


@models.command("list")
@click.pass_obj
def models_list(settings: Settings) -> None:
    """Registered models with their latest version and aliases."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        found = ModelRegistry(db).list_models()
    table = Table("name", "latest", "aliases", "description")
    for m in found:
        aliases = ", ".join(f"{a}->v{v}" for a, v in sorted((m.get("aliases") or {}).items()))
        table.add_row(
            m["name"], f"v{m['latest_version']}", aliases or "-", m.get("description") or ""
        )
    _console().print(table)


@models.command("show")
@click.argument("name")
@click.pass_obj
def models_show(settings: Settings, name: str) -> None:
    """Versions of one model with lineage (run, epoch, metrics, features, code)."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        versions = ModelRegistry(db).list_versions(name)
    table = Table(
        "version",
        "aliases",
        "run",
        "epoch",
        "metrics",
        "feature service / snapshot",
        "commit",
        "sha256",
        "portable",
        title=name,
    )
    for v in versions:
        lin = v["lineage"]
        table.add_row(
            f"v{v['version']}",
            ", ".join(v["aliases"]) or "-",
            f"{lin.get('experiment_name')} {str(lin['experiment_id'])[-8:]}",
            _fmt(lin.get("epoch")),
            json.dumps(lin.get("metrics") or {}),
            f"{lin.get('feature_service') or '-'} / {lin.get('snapshot_id') or '-'}",
            (lin.get("code_commit") or "-")[:10] + (" (dirty)" if lin.get("code_dirty") else ""),
            (v.get("sha256") or "-")[:16],
            "yes" if v.get("portable") else "no",
        )
    _console().print(table)


@models.command("register")
@click.argument("name")
@click.argument("checkpoint_id")
@click.option(
    "--alias", "aliases", multiple=True, help="Alias to point at the new version (repeatable)."
)
@click.option("--description", default="", help="Free text.")
@click.pass_obj
def models_register(settings: Settings, name, checkpoint_id, aliases, description) -> None:
    """Register checkpoint CHECKPOINT_ID (see `eegfs runs show`) as the next version of NAME."""
    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        version = ModelRegistry(db).register(
            name, checkpoint_id, description=description, aliases=aliases
        )
    click.echo(
        f"{name} v{version['version']} <- checkpoint {checkpoint_id}"
        + ("" if version["portable"] else " (no GridFS copy: loadable only where the file is)")
    )


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=int)
@click.pass_obj
def models_alias(settings: Settings, name, alias, version) -> None:
    """Point ALIAS of model NAME at VERSION (moves it if it pointed elsewhere)."""
    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        ModelRegistry(db).set_alias(name, alias, version)
    click.echo(f"{name}@{alias} -> v{version}")


@models.command("fetch")
@click.argument("name")
@click.argument("alias_or_version")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Directory for a GridFS download.",
)
@click.pass_obj
def models_fetch(settings: Settings, name, alias_or_version, dest) -> None:
    """A verified local copy of a model version (by number, alias or 'latest')."""
    from tracking.database import open_database
    from tracking.registry import ModelRegistry

    with open_database(settings) as db:
        path = ModelRegistry(db).fetch(name, alias_or_version, dest)
    click.echo(str(path))


# --- subjects and datasets ----------------------------------------------------------------------
@click.group(cls=_Group)
def subjects() -> None:
    """EEG2025 subject documents (demographics, releases, quality, annotations)."""


@subjects.command("sync")
@click.option(
    "--participants",
    "participants",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="BIDS participants.tsv (repeatable) [default: <data>/demo/participants.tsv if present].",
)
@click.option(
    "--features-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature tables root with subject_features/ [default: <EEGFS_DATA_DIR>/features].",
)
@click.pass_obj
def subjects_sync(settings: Settings, participants, features_dir) -> None:
    """Upsert subjects from participants.tsv and the feature pipeline's per-subject summaries.

    The files are read with the feature build's parser (pipelines.participants): n/a, N/A, NA
    and empty cells are missing, and a subject listed twice in one file is an error.
    """
    from pipelines.errors import PipelineError
    from pipelines.participants import read_participants
    from tracking.database import open_database
    from tracking.subjects import sync_subjects

    if not participants and (settings.demo_dir / "participants.tsv").is_file():
        participants = (settings.demo_dir / "participants.tsv",)
    try:
        rows = {p.resolve(): read_participants(p, extra_columns=True) for p in participants}
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from exc
    with open_database(settings) as db:
        report = sync_subjects(db, rows, features_dir or settings.features_dir)
    click.echo(
        f"{report.subjects} subject(s): {report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged ({report.participant_rows} participants row(s) from "
        f"{len(report.participants_files)} file(s), {report.feature_rows} feature summary row(s))"
    )
    for message in report.messages:
        click.echo(message)


@subjects.command("show")
@click.argument("subject_id")
@click.pass_obj
def subjects_show(settings: Settings, subject_id: str) -> None:
    """One subject document as JSON (sub-NDAR... or NDAR...)."""
    from services.ids import normalize_subject_id
    from tracking.database import open_database
    from tracking.errors import NotFoundError
    from tracking.schema import SUBJECTS

    sid = normalize_subject_id(subject_id)
    with open_database(settings) as db:
        doc = db[SUBJECTS].find_one({"subject_id": sid})
    if doc is None:
        raise NotFoundError(f"no subject {sid}; run `eegfs subjects sync` first")
    click.echo(_dumps(doc))


@click.group(cls=_Group)
def datasets() -> None:
    """Catalogue of HDF5 window files (path, release, challenge, shape, sha256)."""


def _dataset_record(path: Path, layout, sfreq: float | None) -> dict[str, Any]:
    """Catalogue fields of one HDF5 window file, read with the feature build's reader."""
    from pipelines.hdf5_io import open_windows
    from services.files import sha256_file

    with open_windows(path, layout=layout, sfreq=sfreq) as w:
        dset = w.dataset
        attrs = dict(dset.file.attrs)
        record = {
            "path": str(Path(path).resolve()),
            "challenge": w.layout.challenge,
            "layout": w.layout.name,
            "dataset": w.layout.data,
            "release": w.release or None,
            "task": attrs.get("task"),
            "windows": w.n_windows,
            "channels": w.n_channels,
            "samples": w.n_times,
            "sfreq": w.sfreq,
            "window_s": w.n_times / w.sfreq,
            "n_subjects": len(set(w.subject_ids)),
            "dtype": str(dset.dtype),
            "compression": dset.compression,
            "size_bytes": Path(path).stat().st_size,
            "attrs": attrs,
            "warnings": [],
        }
    record["sha256"] = sha256_file(path)
    return record


@datasets.command("register")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@layout_options
@click.pass_obj
def datasets_register(settings: Settings, files, layout, mapping, sfreq) -> None:
    """Record HDF5 FILES with their metadata and sha256 (idempotent: keyed by content).

    Files are opened and validated exactly as `eegfs features build` does (same --layout, --map
    and --sfreq options); every file is read and hashed before anything is written.

    \b
    Example:
      eegfs datasets register data/demo/*.h5
    """
    from pipelines.errors import PipelineError
    from tracking.database import open_database
    from tracking.datasets import record_datasets

    lay = parse_layout(layout, mapping)
    paths = list(files)
    if len(paths) > 1:
        from tqdm import tqdm

        paths = tqdm(paths, desc="reading and hashing", unit="file")
    records = []
    for path in paths:
        try:
            records.append(_dataset_record(path, lay, sfreq))
        except PipelineError as exc:  # the message names the file (bad subject ids included)
            raise click.ClickException(str(exc)) from exc
    with open_database(settings) as db:
        docs = record_datasets(db, records)
    for d in docs:
        click.echo(
            f"{d['path']}: challenge {d['challenge']} release {d.get('release')} "
            f"{d['windows']}x{d['channels']}x{d['samples']} @ {d.get('sfreq')} Hz  sha256 {d['sha256'][:16]}"
        )
        for warning in d.get("warnings") or []:
            click.echo(f"  warning: {warning}")


@datasets.command("list")
@click.pass_obj
def datasets_list(settings: Settings) -> None:
    """Catalogued HDF5 files."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.schema import DATASETS

    with open_database(settings) as db:
        docs = list(db[DATASETS].find({}).sort([("challenge", 1), ("release", 1)]))
    table = Table(
        "challenge", "release", "windows", "channels", "samples", "sfreq", "sha256", "path"
    )
    for d in docs:
        table.add_row(
            _fmt(d.get("challenge")),
            _fmt(d.get("release")),
            _fmt(d.get("windows")),
            _fmt(d.get("channels")),
            _fmt(d.get("samples")),
            _fmt(d.get("sfreq")),
            (d.get("sha256") or "-")[:16],
            d.get("path") or "-",
        )
    _console().print(table)


# --- migration, backup, restore -----------------------------------------------------------------
@click.command("migrate-sqlite", cls=_TrackingCommand)
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Read and map everything, print the counts, write nothing."
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA timezone the file's naive timestamps were written in (recorded).",
)
@click.pass_obj
def migrate_sqlite_command(settings: Settings, path: Path, dry_run: bool, timezone: str) -> None:
    """Migrate an EEG2025 SQLite run log (eeg2025_metadata.db) into MongoDB; safe to rerun."""
    from rich.table import Table

    from tracking.database import open_database
    from tracking.migrate import migrate_sqlite

    with open_database(settings, indexes=not dry_run) as db:
        report = migrate_sqlite(db, path, dry_run=dry_run, timezone=timezone)
    verb = "would insert" if dry_run else "inserted"
    table = Table(
        "table",
        "collection",
        "rows",
        verb,
        "already there",
        "skipped",
        title=f"{path.name} (sha256 {report.sha256[:12]}){' - dry run' if dry_run else ''}",
    )
    for t in report.tables.values():
        table.add_row(
            t.table, t.target, str(t.rows), str(t.inserted), str(t.existing), str(t.skipped)
        )
    console = _console()
    console.print(table)
    for note in report.notes:
        console.print(f"- {note}")


@click.command("backup", cls=_TrackingCommand)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup_command(settings: Settings, directory: Path) -> None:
    """Write every collection and GridFS file to DIRECTORY (new or empty), no mongodump needed."""
    from tracking.backup import backup_database
    from tracking.database import open_database

    with open_database(settings, indexes=False) as db:
        report = backup_database(db, directory, progress=True)
    click.echo(
        f"{sum(report.collections.values())} document(s) in {len(report.collections)} collection(s), "
        f"{report.gridfs_files} GridFS file(s) ({report.gridfs_bytes} bytes) -> {report.directory}"
    )


@click.command("restore", cls=_TrackingCommand)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--drop", is_flag=True, help="Drop each backed-up collection first (exact copy).")
@click.pass_obj
def restore_command(settings: Settings, directory: Path, drop: bool) -> None:
    """Restore a backup made by `eegfs backup` into MONGO_DB (checksums verified first)."""
    from tracking.backup import restore_database
    from tracking.database import open_database

    with open_database(settings, indexes=False) as db:
        report = restore_database(db, directory, drop=drop, progress=True)
    click.echo(
        f"restored {sum(report.collections.values())} document(s) in {len(report.collections)} "
        f"collection(s) and {report.gridfs_files} GridFS file(s) into {report.database}"
    )


def register(cli: click.Group) -> None:
    for command in (
        runs,
        models,
        subjects,
        datasets,
        migrate_sqlite_command,
        backup_command,
        restore_command,
    ):
        cli.add_command(command)


__all__ = ["register"]
