"""Benchmark of the experiment tracker against raw pymongo, in the same run.

Measures the latency of ``Run.log_epoch`` and ``Run.log_metrics`` (what the training loop waits
for) with one writer and with 8 concurrent writer processes, next to raw pymongo
``insert_many`` of the same documents, and prints p50/p99 and their ratios. It also measures the
time until the tracker's writes are durable in MongoDB (``flush``), the call latency while the
server is unreachable (spool), and checks that 8 writers lose and duplicate nothing.

The targets it prints (``target: ... OK`` / ``MISSED``) are checked: the exit status is 1 when
one is missed, so ``make bench`` fails.

Run: ``.venv/bin/python benchmarks/bench_tracking.py`` (about 1-2 minutes). Uses MONGO_URI
when a server answers there, else starts a private secantusdb on a free port.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bson import ObjectId
from pymongo.errors import PyMongoError

from services.connections import mask_uri, mongo_client
from services.local import free_port, ping_mongo, start_mongo, stop_process
from services.settings import Settings, load_settings
from tracking import Tracker
from tracking.database import durable_write_concern

WRITERS = 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> tuple[float, float]:
    return pct(values, 50) * 1e3, pct(values, 99) * 1e3


def _start(tracker: Tracker, name: str):
    return tracker.start_run(
        name,
        2,
        model={"name": "bench"},
        config={"lr": 0.001},
        data={},
        features={},
        code={"commit": None, "dirty": None},
    )


def tracker_writer(settings: Settings, epochs: int, steps: int, steps_per_epoch: int) -> dict:
    """Log epochs and step metrics through the tracker; per-call latencies + the run id."""
    epoch_lat, step_lat = [], []
    with Tracker(settings, spool_dir=settings.data_dir / "spool") as tracker:
        run = _start(tracker, "bench")
        step = 0
        for epoch in range(epochs):
            for _ in range(steps_per_epoch if step < steps else 0):
                t = time.perf_counter()
                run.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.001}, step=step)
                step_lat.append(time.perf_counter() - t)
                step += 1
            t = time.perf_counter()
            run.log_epoch(epoch, {"train_loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1)})
            epoch_lat.append(time.perf_counter() - t)
        run.finish()
        t = time.perf_counter()
        synced = tracker.flush()
        flush_s = time.perf_counter() - t
    return {
        "epoch": epoch_lat,
        "step": step_lat,
        "flush_s": flush_s,
        "synced": synced,
        "run_id": str(run.id),
    }


def raw_writer(
    uri: str, db_name: str, epochs: int, steps: int, steps_per_epoch: int, batch: int
) -> dict:
    """The same documents with raw pymongo insert_many (epochs one by one, steps in batches),
    with the tracker's durable write concern."""
    client = mongo_client(uri)
    db = client.get_database(db_name, write_concern=durable_write_concern(client))
    exp = ObjectId()
    epoch_lat, batch_lat, buffer = [], [], []
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch if step < steps else 0):
            buffer.append(
                {
                    "experiment_id": exp,
                    "step": step,
                    "values": {"loss": 1.0 / (step + 1), "lr": 0.001},
                }
            )
            step += 1
            if len(buffer) >= batch:
                t = time.perf_counter()
                db.raw_metrics.insert_many(buffer)
                batch_lat.append(time.perf_counter() - t)
                buffer = []
        doc = {
            "experiment_id": exp,
            "epoch": epoch,
            "metrics": {"train_loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1)},
        }
        t = time.perf_counter()
        db.raw_epochs.insert_many([doc])
        epoch_lat.append(time.perf_counter() - t)
    if buffer:
        t = time.perf_counter()
        db.raw_metrics.insert_many(buffer)
        batch_lat.append(time.perf_counter() - t)
    client.close()
    return {"epoch": epoch_lat, "batch": batch_lat, "exp": str(exp)}


def offline_latency(tmp: Path, calls: int) -> list[float]:
    dead = Settings(
        mongo_uri=f"mongodb://127.0.0.1:{free_port()}/", mongo_db="bench_offline", data_dir=tmp
    )
    lat = []
    tracker = Tracker(dead, spool_dir=tmp / "offline-spool")
    run = _start(tracker, "offline")
    for epoch in range(calls):
        t = time.perf_counter()
        run.log_epoch(epoch, {"val_loss": 1.0})
        run.log_metrics({"loss": 1.0}, step=epoch)
        run.heartbeat()
        lat.append(time.perf_counter() - t)
    tracker.close()
    return lat


@dataclass(frozen=True)
class Target:
    """A target this benchmark prints and checks: the exit status is non-zero when one is missed."""

    name: str
    measured: str
    met: bool


def check_targets(targets: list[Target]) -> bool:
    """Print every target with OK / MISSED; True when all are met."""
    print()
    for target in targets:
        print(f"target: {target.name}: {target.measured} {'OK' if target.met else 'MISSED'}")
    return all(t.met for t in targets)


def one_writer(uri: str, settings: Settings, args) -> tuple[list, dict, float, float]:
    """Table rows, tracker results, tracker wall time and raw insert time of one writer."""
    spe = max(1, args.steps // args.epochs)
    raw = raw_writer(uri, settings.mongo_db, args.epochs, args.steps, spe, 500)
    t0 = time.perf_counter()
    one = tracker_writer(settings, args.epochs, args.steps, spe)
    total_tracker = time.perf_counter() - t0
    rows = [
        ("log_epoch, 1 writer", ms(one["epoch"]), "insert_many([epoch])", ms(raw["epoch"])),
        (
            "log_metrics per step, 1 writer",
            ms(one["step"]),
            "insert_many(500 points)/500",
            tuple(v / 500 for v in ms(raw["batch"])),
        ),
    ]
    return rows, one, total_tracker, sum(raw["epoch"]) + sum(raw["batch"])


def many_writers(uri: str, settings: Settings, epochs: int, steps: int) -> tuple[list, list]:
    """Table rows and tracker results of WRITERS concurrent writer processes."""
    ctx = multiprocessing.get_context("spawn")
    spe = max(1, steps // epochs)
    # close() + join(): workers exit on their own, never through terminate()'s SIGTERM
    with ctx.Pool(WRITERS) as pool:
        raws = pool.starmap(
            raw_writer, [(uri, settings.mongo_db, epochs, steps, spe, 500)] * WRITERS
        )
        pool.close()
        pool.join()
    with ctx.Pool(WRITERS) as pool:
        many = pool.starmap(tracker_writer, [(settings, epochs, steps, spe)] * WRITERS)
        pool.close()
        pool.join()
    rows = [
        (
            f"log_epoch, {WRITERS} writers",
            ms([x for r in many for x in r["epoch"]]),
            "insert_many([epoch])",
            ms([x for r in raws for x in r["epoch"]]),
        ),
        (
            f"log_metrics per step, {WRITERS} writers",
            ms([x for r in many for x in r["step"]]),
            "insert_many(500 points)/500",
            tuple(v / 500 for v in ms([x for r in raws for x in r["batch"]])),
        ),
    ]
    return rows, many


def lost_and_duplicated(db, results: list[dict], epochs: int, steps: int) -> tuple[int, int]:
    """Epochs and step points missing from, or stored twice in, MongoDB over every writer."""
    lost = dup = 0
    for r in results:
        exp = ObjectId(r["run_id"])
        logged = [e["epoch"] for e in db.epochs.find({"experiment_id": exp}, {"epoch": 1})]
        points = [p["step"] for b in db.metrics.find({"experiment_id": exp}) for p in b["points"]]
        lost += len(set(range(epochs)) - set(logged)) + len(set(range(steps)) - set(points))
        dup += (len(logged) - len(set(logged))) + (len(points) - len(set(points)))
    return lost, dup


def print_table(rows: list) -> None:
    print()
    print(
        f"{'operation':<38} {'p50 ms':>8} {'p99 ms':>8} | {'raw pymongo baseline':<34} {'p50 ms':>8} "
        f"{'p99 ms':>8} | {'ratio p50':>9} {'ratio p99':>9}"
    )
    for name, (p50, p99), base, (b50, b99) in rows:
        print(
            f"{name:<38} {p50:8.4f} {p99:8.4f} | {base:<34} {b50:8.4f} {b99:8.4f} | "
            f"{p50 / b50:9.3f} {p99 / b99:9.3f}"
        )


def run_benchmark(uri: str, settings: Settings, args, tmp: Path) -> bool:
    """Every measurement, printed; True when every target is met."""
    rows, one, total_tracker, raw_total = one_writer(uri, settings, args)
    we, ws = args.writers_epochs, args.writers_steps
    rows8, many = many_writers(uri, settings, we, ws)
    client = mongo_client(uri)
    try:
        lost, dup = lost_and_duplicated(client[settings.mongo_db], many, we, ws)
    finally:
        client.close()
    all_synced = all(r["synced"] for r in many) and one["synced"]
    offline = offline_latency(tmp / "offline", 300)

    print_table(rows + rows8)
    print()
    print(
        f"time until durable (journaled, acknowledged), 1 writer: tracker {total_tracker:.2f} s "
        f"for {args.epochs} epochs + {args.steps} steps (flush after the last call "
        f"{one['flush_s']:.2f} s); raw inserts with the same write concern {raw_total:.2f} s; "
        f"ratio {total_tracker / raw_total:.2f}"
    )
    o50, o99 = ms(offline)
    print(
        f"server unreachable: log_epoch+log_metrics+heartbeat p50 {o50:.3f} ms, p99 {o99:.3f} ms, "
        f"max {max(offline) * 1e3:.3f} ms"
    )
    print(
        f"mean log_epoch {statistics.mean(one['epoch']) * 1e3:.4f} ms over {len(one['epoch'])} calls"
    )
    p99_one = ms(one["epoch"])[1]
    return check_targets(
        [
            Target("log_epoch p99 < 5 ms with one writer", f"{p99_one:.3f} ms", p99_one < 5.0),
            Target(
                "calls while MongoDB is unreachable never take 200 ms",
                f"max {max(offline) * 1e3:.3f} ms",
                max(offline) < 0.2,
            ),
            Target(
                f"{WRITERS} writers lose and duplicate nothing",
                f"lost {lost}, duplicated {dup}",
                lost == 0 and dup == 0,
            ),
            Target(
                "every writer's writes are in MongoDB after flush()", str(all_synced), all_synced
            ),
        ]
    )


def drop_database(uri: str, db_name: str) -> None:
    """Remove the benchmark's database from a configured server (a warning when that fails)."""
    client = mongo_client(uri, timeout_ms=10_000)  # dropping many documents takes a while
    try:
        client.drop_database(db_name)
    except PyMongoError as exc:
        print(f"warning: could not drop database {db_name} ({exc}); drop it by hand")
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2000, help="log_epoch calls, one writer")
    parser.add_argument("--steps", type=int, default=20000, help="log_metrics calls, one writer")
    parser.add_argument(
        "--writers-epochs", type=int, default=300, help="epochs per writer, 8 writers"
    )
    parser.add_argument(
        "--writers-steps", type=int, default=3000, help="steps per writer, 8 writers"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the offline phase warns about its spool on purpose

    tmp = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    configured = load_settings().mongo_uri
    server = None
    if ping_mongo(configured) is not None:
        uri = configured
    else:
        server = start_mongo(free_port(), tmp / "mongo")
        uri = server.uri
    db_name = f"bench_tracking_{uuid.uuid4().hex[:8]}"
    settings = Settings(mongo_uri=uri, mongo_db=db_name, data_dir=tmp / "data")
    client = mongo_client(uri)
    try:
        concern = durable_write_concern(client).document
    finally:
        client.close()
    print(
        f"MongoDB: {mask_uri(uri)} ({'started here: secantusdb' if server else 'configured'}), "
        f"db {db_name}, write concern {concern} (tracker and raw baseline), "
        f"python {sys.version.split()[0]}"
    )
    try:
        ok = run_benchmark(uri, settings, args, tmp)
    finally:
        if server is not None:
            stop_process(server.pid)  # its data lives in tmp, removed below
        else:
            drop_database(uri, db_name)
        shutil.rmtree(tmp, ignore_errors=True)
    print("all targets met" if ok else "some targets MISSED: exit status 1")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
