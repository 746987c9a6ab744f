"""Benchmark of the dashboard's page data against raw pymongo, in the same run.

Runs page: ``dashboard.runs.runs_page`` for a filtered (challenge 2, completed), sorted (newest
first) first page of 50, with 10,000 and with 100,000 runs whose documents are those of 20-epoch
runs, next to a bare ``find(...).sort(...).limit(50)`` of the same filter. Targets: p95 <= 300 ms
at 10,000 runs, p95 at 100,000 <= 1.5x p95 at 10,000, and no database reply holding more
documents than one page (checked with a pymongo command listener).

Run page: ``dashboard.run_detail.run_page_data`` for a run with 2,000 epochs and 100,000 step
metrics (100 buckets), next to reading the same epochs and every bucket with pymongo (what a
page that does not thin the steps would fetch). Target: p95 <= 300 ms.

Run: ``.venv/bin/python benchmarks/bench_dashboard.py`` (several minutes, most of it inserting
the runs; ``--runs 10000`` for the first size only). Uses MONGO_URI / REDIS_URL when they are
configured and answer, else starts a private secantusdb and redis-server on free ports. Exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bson import ObjectId
from pymongo import monitoring

from dashboard import run_detail, runs
from services.connections import mask_uri, mongo_client, redis_client
from services.local import free_port, ping_mongo, ping_redis, start_mongo, start_redis, stop_process
from services.settings import load_settings
from tracking.schema import ensure_indexes

PAGE = 50
TARGET_RUNS_P95_MS = 300.0
TARGET_GROWTH = 1.5
TARGET_RUN_PAGE_P95_MS = 300.0
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EPOCH_METRICS = (
    "train_loss",
    "val_loss",
    "val_nrmse",
    "val_subject_nrmse",
    "val_mean_predictor_nrmse",
    "val_subject_mean_predictor_nrmse",
    "val_rmse",
    "lr",
    "duration_s",
    "train_s",
    "batches_per_s",
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def experiment(i: int, now: dt.datetime) -> dict:
    """An experiment document as the tracker leaves it after a 20-epoch run."""
    status = ("completed", "completed", "completed", "failed", "stopped")[i % 5]
    started = BASE + dt.timedelta(seconds=30 * i)
    metrics = {name: 0.5 + ((i * 7 + k) % 100) / 200 for k, name in enumerate(EPOCH_METRICS)}
    return {
        "_id": ObjectId(),
        "name": f"c{1 + i % 2}-eegnex-online-s{i}",
        "challenge": 1 + i % 2,
        "model": {"name": "eegnex", "architecture": "EEGNeX", "parameters": 62353},
        "config": {"train": {"batch_size": 32, "epochs": 20, "seed": i}, "lr": 0.002},
        "data": {"files": [{"path": f"/data/challenge2_R{1 + i % 3}.h5", "release": "R1"}]},
        "features": {"service": "challenge2_inputs_v1", "snapshot_id": "fs_0123456789abcdef"},
        "code": {"commit": "0" * 40, "dirty": False},
        "status": status,
        "started_at": started,
        "ended_at": started + dt.timedelta(minutes=20),
        "heartbeat": started + dt.timedelta(minutes=20),
        "host": f"node{i % 8}",
        "tags": ["sweep"] if i % 10 == 0 else [],
        "notes": "",
        "last_epoch": 19,
        "last_metrics": metrics,
        "summary": {} if status == "failed" else metrics,
        "best_checkpoint": {"id": ObjectId(), "epoch": 12, "metrics": metrics},
    }


def fill_runs(db, start: int, stop: int, now: dt.datetime, batch: int = 2000) -> None:
    for first in range(start, stop, batch):
        db.experiments.insert_many(
            [experiment(i, now) for i in range(first, min(first + batch, stop))], ordered=False
        )


class BatchSizes(monitoring.CommandListener):
    """The largest number of documents any reply carried (find/aggregate/getMore batches)."""

    def __init__(self) -> None:
        self.largest = 0

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        cursor = event.reply.get("cursor") or {}
        batch = cursor.get("firstBatch", cursor.get("nextBatch"))
        if batch is not None:
            self.largest = max(self.largest, len(batch))

    def failed(self, event) -> None:
        pass


def measure(fn, repeat: int) -> list[float]:
    fn()  # warm up (connections, server caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def runs_page_figures(db, raw_db, repeat: int) -> dict:
    query = runs.RunQuery(challenge=2, status="completed", page_size=PAGE)
    match = {"challenge": 2, "status": "completed"}
    project = runs.runs_page(db, query)
    assert len(project.rows) == PAGE, "the benchmark query must fill a page"
    ours = measure(lambda: runs.runs_page(db, query), repeat)
    raw = measure(
        lambda: list(raw_db.experiments.find(match).sort("started_at", -1).limit(PAGE)), repeat
    )
    return {"ours": ours, "raw": raw, "total": project.total}


def fill_history(db, run_id: ObjectId, epochs: int, steps: int) -> None:
    db.epochs.insert_many(
        [
            {
                "experiment_id": run_id,
                "epoch": e,
                "logged_at": BASE + dt.timedelta(seconds=e),
                "metrics": {name: 1.0 / (e + 1 + k) for k, name in enumerate(EPOCH_METRICS)},
            }
            for e in range(epochs)
        ]
    )
    for first in range(0, steps, 1000):
        points = [
            {
                "step": s,
                "at": BASE + dt.timedelta(seconds=s / 10),
                "values": {"loss": 1.0 / (s + 1), "lr": 0.002, "batches_per_s": 12.5},
            }
            for s in range(first, min(first + 1000, steps))
        ]
        db.metrics.insert_one(
            {
                "experiment_id": run_id,
                "first_step": first,
                "last_step": points[-1]["step"],
                "n": len(points),
                "points": points,
                "batch_ids": [],
            }
        )


def run_page_figures(db, redis, run_id: ObjectId, repeat: int) -> dict:
    data = run_detail.run_page_data(db, redis, run_id)
    assert len(data["epochs"]) == 2000, len(data["epochs"])
    ours = measure(lambda: run_detail.run_page_data(db, redis, run_id), repeat)
    raw = measure(
        lambda: (
            list(db.epochs.find({"experiment_id": run_id}).sort("epoch", 1)),
            [p for b in db.metrics.find({"experiment_id": run_id}) for p in b["points"]],
        ),
        repeat,
    )
    return {"ours": ours, "raw": raw, "steps_drawn": len(data["steps"])}


def _servers(tmp: Path):
    """Configured servers (MONGO_URI / REDIS_URL, or started by `eegfs services up`) when they
    answer, else private ones (never whatever happens to listen on a default port)."""
    settings = load_settings()
    started = []
    mongo_uri, redis_url = settings.mongo_uri, settings.redis_url
    if settings.mongo_source == "default" or ping_mongo(mongo_uri) is None:
        server = start_mongo(free_port(), tmp / "mongo")
        started.append(server)
        mongo_uri = server.uri
    if settings.redis_source == "default" or ping_redis(redis_url) is None:
        server = start_redis(free_port(), tmp / "redis")
        started.append(server)
        redis_url = server.uri
    return mongo_uri, redis_url, started


def _line(label: str, ours: list[float], raw: list[float]) -> str:
    p50, p95 = statistics.median(ours) * 1e3, pct(ours, 95) * 1e3
    r50, r95 = statistics.median(raw) * 1e3, pct(raw, 95) * 1e3
    return (
        f"{label:<34} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms   raw pymongo p50 {r50:8.1f} ms  "
        f"p95 {r95:8.1f} ms   ratio p95 {p95 / r95:5.2f}"
    )


def bench_runs_page(db, raw_db, replies: BatchSizes, sizes: list[int], repeat: int) -> list[str]:
    """Fill the runs collection size after size and time the runs page; returns missed targets."""
    failures = []
    now = dt.datetime.now(dt.UTC)
    p95s = {}
    filled = 0
    for n in sizes:
        t = time.perf_counter()
        fill_runs(raw_db, filled, n, now)
        filled = n
        print(f"inserted {n:,} runs in total ({time.perf_counter() - t:.0f} s for this step)")
        replies.largest = 0
        fig = runs_page_figures(db, raw_db, repeat)
        p95s[n] = pct(fig["ours"], 95) * 1e3
        print(_line(f"runs page, {n:,} runs ({fig['total']:,} match)", fig["ours"], fig["raw"]))
        print(f"{'':<34} largest reply: {replies.largest} documents (one page = {PAGE})")
        if replies.largest > PAGE:
            failures.append(f"a reply held {replies.largest} documents at {n:,} runs")
    first, last = sizes[0], sizes[-1]
    if p95s[first] > TARGET_RUNS_P95_MS:
        failures.append(f"runs page p95 {p95s[first]:.0f} ms > {TARGET_RUNS_P95_MS:.0f} ms")
    if last != first:
        growth = p95s[last] / p95s[first]
        print(f"\nruns page p95 growth {first:,} -> {last:,} runs: {growth:.2f}x")
        if growth > TARGET_GROWTH:
            failures.append(f"runs page p95 grew {growth:.2f}x > {TARGET_GROWTH}x")
    return failures


def bench_run_page(db, raw_db, redis, repeat: int) -> list[str]:
    """A run with 2,000 epochs and 100,000 step points; time its page; returns missed targets."""
    run_id = ObjectId()
    now = dt.datetime.now(dt.UTC)
    raw_db.experiments.insert_one({**experiment(0, now), "_id": run_id, "status": "running"})
    t = time.perf_counter()
    fill_history(raw_db, run_id, 2000, 100_000)
    print(f"\ninserted 2,000 epochs and 100,000 step points ({time.perf_counter() - t:.0f} s)")
    fig = run_page_figures(db, redis, run_id, repeat)
    print(_line("run page, 2,000 epochs, 100k steps", fig["ours"], fig["raw"]))
    print(f"{'':<34} steps drawn: {fig['steps_drawn']:,} (thinned on the server)")
    run_p95 = pct(fig["ours"], 95) * 1e3
    if run_p95 > TARGET_RUN_PAGE_P95_MS:
        return [f"run page p95 {run_p95:.0f} ms > {TARGET_RUN_PAGE_P95_MS:.0f} ms"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="10000,100000", help="run counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per measurement")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.runs.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    mongo_uri, redis_url, started = _servers(tmp)
    db_name = f"bench_dashboard_{uuid.uuid4().hex[:8]}"
    replies = BatchSizes()
    # Long timeouts: a slow server must show up in the figures, not abort the run (pymongo
    # cancels the operations in flight when a heartbeat waits longer than connectTimeoutMS).
    slow = {"socketTimeoutMS": 600_000, "connectTimeoutMS": 120_000}
    client = mongo_client(mongo_uri, event_listeners=[replies], **slow)
    raw_client = mongo_client(mongo_uri, **slow)
    redis = redis_client(redis_url, timeout_s=0.5)
    db, raw_db = client[db_name], raw_client[db_name]
    try:
        print(f"MongoDB {mask_uri(mongo_uri)}, Redis {mask_uri(redis_url)}, db {db_name}")
        print(f"python {sys.version.split()[0]}, {args.repeat} timed calls per line\n")
        ensure_indexes(raw_db)
        failures = bench_runs_page(db, raw_db, replies, sizes, args.repeat)
        failures += bench_run_page(db, raw_db, redis, args.repeat)
    finally:
        try:
            raw_client.drop_database(db_name)
        finally:  # the servers started here stop even when the drop fails
            client.close()
            raw_client.close()
            redis.close()
            for server in started:
                stop_process(server.pid)
    print()
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    if not failures:
        print("all targets met")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
