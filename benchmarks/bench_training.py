"""Training benchmarks: the loader against torch's own DataLoader, and online features.

1. Loader throughput (windows/s) over a gzip-compressed Challenge 2 HDF5 file: the training
   dataset (lazy per-worker handles, random 2 s crops, per-channel normalisation) read by the
   project's ``WindowLoader`` with 0 workers, by torch's own ``DataLoader`` with 2 workers
   (plain: same dataset, sampler, collate, persistent workers and prefetch) and by
   ``WindowLoader`` with 2 workers (batches through its reused shared-memory slot pool); and,
   as the ceiling of any worker pool on this machine at this moment, by bare reads: the same
   batches read in 1 and in 2 forked processes that hand nothing back.
   Targets: ``WindowLoader``'s speed-up from 0 to 2 workers at least 0.75 of the bare reads'
   speed-up from 1 to 2 processes (torch's plain DataLoader keeps 0.6-0.7 of it; a fixed
   "1.7x" would ask for more than the bare reads get on 2 cores, where an epoch of 15 batches
   ends with one worker idle and the main process shares the cores); and torch's plain
   DataLoader with 2 workers spending at least 1.15x the CPU time per window of
   ``WindowLoader`` (the slot pool must earn its code). The pool's gain is CPU time (no segment
   to create, fault in and map per batch), which is what bounds throughput when the workers
   have the cores; CPU time is checked because, unlike windows/s, other load on a shared
   machine barely moves it. The windows/s ratio is printed beside it.
2. Training steps per second of the default model with subject features looked up online per
   batch (in the loader workers) versus the same features preloaded in memory, with the feature
   client's in-process cache off and on (hit rate printed). Each source gets one training run
   that stays alive (persistent loader workers, so the cache stays warm as in a real run), and
   the runs' epochs are interleaved, one epoch each in turn, the order reversed every other
   round, after one warm-up epoch. Single epochs on a shared 2-core VM vary by +-15 %; whole
   runs measured one after the other (the earlier method) gave 1.04x, 1.04x and 0.85x for the
   same code. Target: cached online steps/s over all its epochs at least 0.97x preloaded's.

Self-contained: it writes the default demo data (or reuses ``--demo-dir`` when it holds the
files), builds the features into a temporary directory, and runs a private redis-server for the
online store. Loader measurements are repeated in alternating order; their ratios are medians
of back-to-back pairs, and the CPU time per window (main process and workers) is printed beside,
which is less sensitive to other load on a shared machine. Exits 1 when a target is missed.
Run: ``.venv/bin/python benchmarks/bench_training.py`` (about 6 minutes on 2 cores),
``--loader-only``, ``--step-rounds N`` (measured epochs per source, default 30).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demodata.writer import write_demo_data  # noqa: E402
from featurestore.client import FeatureStoreClient  # noqa: E402
from featurestore.labels import INPUT_SERVICES  # noqa: E402
from pipelines.build import BuildOptions, build_features  # noqa: E402
from services.local import free_port, start_redis, stop_process  # noqa: E402
from services.memory import retain_freed_memory  # noqa: E402
from services.settings import Settings  # noqa: E402
from training.challenges import get_challenge  # noqa: E402
from training.data import (  # noqa: E402
    EpochSampler,
    WindowDataset,
    compute_channel_stats,
    worker_init_fn,
)
from training.features import (  # noqa: E402
    BatchCollate,
    FeatureScaler,
    OnlineFeatureSource,
    TableFeatureSource,
    select_columns,
)
from training.index import build_index  # noqa: E402
from training.loader import WindowLoader  # noqa: E402
from training.loop import LoopState, TargetScale, fit  # noqa: E402
from training.models import build_model  # noqa: E402
from training.splits import make_split  # noqa: E402

#: WindowLoader's 2-over-0-workers speed-up must reach this share of the bare reads' (the rest
#: is what handing batches back costs: the main process's copy out of the slot, messages).
SCALING_SHARE = 0.75

#: (name, target, measured) of every target checked; main() exits 1 when one is missed.
TARGETS: list[tuple[str, float, float]] = []


def check(name: str, value: float, target: float) -> str:
    """Record a ``value >= target`` check; the verdict to print."""
    TARGETS.append((name, target, value))
    return f"(target >= {target:.2f}x) {'OK' if value >= target else 'BELOW TARGET'}"


def _loader(dataset, *, cls=WindowLoader, workers: int, collate, batch_size=32, seed=0):
    return cls(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle=True, seed=seed),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )


def bench_loader(loader, epochs: int) -> tuple[float, float]:
    """(windows per second, CPU ms per window of this process and its workers) over ``epochs``
    passes after one warm-up pass (workers started, file handles open, pages cached)."""
    import psutil

    me = psutil.Process()
    n = 0
    for epoch in range(epochs + 1):
        loader.sampler.set_epoch(epoch)
        if epoch == 1:
            procs = [me, *me.children(recursive=True)]
            cpu0 = [p.cpu_times() for p in procs]
            start = time.perf_counter()
            n = 0
        n += sum(len(b["subjects"]) for b in loader)
    seconds = time.perf_counter() - start
    cpu = sum(
        b.user - a.user + b.system - a.system
        for a, b in zip(cpu0, (p.cpu_times() for p in procs), strict=True)
    )
    return n / seconds, cpu / n * 1e3


def _read_share(ds, collate, epochs: int, share: int, of: int, barrier, done) -> None:
    """In a forked process: read batches ``share``, ``share + of``, ... of each epoch, deliver
    nothing; one warm-up epoch, then wait at ``barrier`` and report the end on ``done``."""
    torch.set_num_threads(1)
    sampler = EpochSampler(len(ds), shuffle=True, seed=0)
    for epoch in range(epochs + 1):
        if epoch == 1:
            barrier.wait()
        sampler.set_epoch(epoch)
        batches = list(BatchSampler(sampler, 32, drop_last=False))
        for keys in batches[share::of]:
            collate(ds.__getitems__(keys))
    done.put(time.perf_counter())


def bench_bare(ds, collate, epochs: int, processes: int) -> tuple[float, float]:
    """Windows/s of ``processes`` forked processes sharing each epoch's batches round-robin, as
    a DataLoader's workers do, but handing nothing back: what the cores give to a worker pool
    that had no delivery cost at all (the ceiling the loader's scaling is checked against)."""
    ctx = mp.get_context("fork")
    barrier, done = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_read_share, args=(ds, collate, epochs, i, processes, barrier, done))
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    end = max(done.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return len(ds) * epochs / (end - start), float("nan")


def _alternating(sides: dict[str, Callable], repeats: int) -> dict[str, list]:
    """Results of each side ``repeats`` times, the order reversed every other repetition."""
    results: dict[str, list] = {name: [] for name in sides}
    for rep in range(repeats):
        order = list(sides.items())
        if rep % 2:  # drifts in machine load favour neither side
            order.reverse()
        for name, measure in order:
            results[name].append(measure())
    return results


def _pair_ratio(results: dict[str, list], num: str, den: str, key=lambda r: r) -> list[float]:
    return sorted(key(b) / key(a) for a, b in zip(results[den], results[num], strict=True))


def section_loader(demo_dir: Path, repeats: int, epochs: int) -> None:
    """1. Windows/s of WindowLoader (0 and 2 workers) and of torch's plain DataLoader."""
    c2 = str(demo_dir / "challenge2_R1.h5")
    index = build_index([c2])
    split = make_split(index, seed=0)
    stats = compute_channel_stats(index, split.train)
    ds = WindowDataset(index, crop_samples=200, random_crop=True, stats=stats)
    print(
        f"\n1. loader: {Path(c2).name}, {len(ds)} windows of 129 x 400 (gzip, one window per "
        "chunk), batch 32, random 2 s crops, normalised, persistent workers, prefetch 4"
    )
    collate = BatchCollate()
    sides = {
        "bare reads, 1 process": lambda: bench_bare(ds, collate, epochs, 1),
        "bare reads, 2 processes": lambda: bench_bare(ds, collate, epochs, 2),
        "WindowLoader, 0 workers": lambda: bench_loader(
            _loader(ds, workers=0, collate=collate), epochs
        ),
        "DataLoader, 2 workers": lambda: bench_loader(
            _loader(ds, cls=DataLoader, workers=2, collate=collate), epochs
        ),
        "WindowLoader, 2 workers": lambda: bench_loader(
            _loader(ds, workers=2, collate=collate), epochs
        ),
    }
    results = _alternating(sides, repeats)
    for name, runs in results.items():
        cpu_ms = statistics.median(r[1] for r in runs)
        print(
            f"   {name:24s} median {statistics.median(r[0] for r in runs):6.0f} windows/s  (runs: "
            + ", ".join(f"{r[0]:.0f}" for r in runs)
            + ")"
            + ("" if np.isnan(cpu_ms) else f"; CPU {cpu_ms:.3f} ms/window (main + workers)")
        )
    _print_scaling(results)
    _print_ratio(results, "WindowLoader, 2 workers", "DataLoader, 2 workers", None)
    cpu = {name: statistics.median(r[1] for r in runs) for name, runs in results.items()}
    saved = cpu["DataLoader, 2 workers"] / cpu["WindowLoader, 2 workers"]
    print(
        f"   CPU per window, torch DataLoader / WindowLoader (2 workers): {saved:.2f}x "
        f"{check('CPU per window, torch DataLoader / WindowLoader', saved, 1.15)}"
    )


def _print_scaling(results: dict[str, list]) -> None:
    """WindowLoader's 2-over-0-workers speed-up against that of bare reads in 2 processes.

    The bare reads are the ceiling on this machine at this moment: the same batches, split the
    same way, with no batch handed back (see :func:`bench_bare`). Each repetition gives one pair
    of speed-ups (measured back to back); the median share is checked.
    """
    loader = _pair_ratio(results, "WindowLoader, 2 workers", "WindowLoader, 0 workers", _rate)
    bare = _pair_ratio(results, "bare reads, 2 processes", "bare reads, 1 process", _rate)
    shares = sorted(_speedup_shares(results, "WindowLoader, 2 workers"))
    share = statistics.median(shares)
    torch_share = statistics.median(_speedup_shares(results, "DataLoader, 2 workers"))
    print(
        f"   WindowLoader 2 workers / 0: {statistics.median(loader):.2f}x (range "
        f"{loader[0]:.2f}-{loader[-1]:.2f}); bare reads 2 processes / 1: "
        f"{statistics.median(bare):.2f}x (range {bare[0]:.2f}-{bare[-1]:.2f})"
    )
    print(
        f"   WindowLoader's speed-up as a share of the bare one: {share:.2f}x median of "
        f"{len(shares)} repetitions (range {shares[0]:.2f}-{shares[-1]:.2f}) "
        f"{check('WindowLoader 2/0 speed-up / bare 2/1 speed-up', share, SCALING_SHARE)}; "
        f"torch's DataLoader: {torch_share:.2f}x"
    )


def _speedup_shares(results: dict[str, list], loader: str) -> list[float]:
    """Per repetition: (``loader`` / WindowLoader 0 workers) / (bare 2 processes / 1 process)."""
    return [
        (b[0] / a[0]) / (d[0] / c[0])
        for a, b, c, d in zip(
            results["WindowLoader, 0 workers"],
            results[loader],
            results["bare reads, 1 process"],
            results["bare reads, 2 processes"],
            strict=True,
        )
    ]


def _rate(result) -> float:
    return result[0]


def _print_ratio(results: dict[str, list], num: str, den: str, target: float | None) -> None:
    """Windows/s of ``num`` over ``den``: the median of back-to-back pairs, checked if ``target``."""
    pairs = _pair_ratio(results, num, den, key=lambda r: r[0])
    median = statistics.median(pairs)
    verdict = "" if target is None else " " + check(f"{num} / {den}", median, target)
    print(
        f"   {num} / {den}: {median:.2f}x median of {len(pairs)} back-to-back pairs (range "
        f"{pairs[0]:.2f}-{pairs[-1]:.2f}){verdict}"
    )


class StepsRun:
    """One training run kept alive between measured epochs: model, optimiser, its own loaders
    (persistent workers, so a cache in the workers stays warm as in a real run) and state.

    Each source gets one; :meth:`epoch` trains one more epoch and returns its batches/s, so the
    sources can be interleaved epoch by epoch (seconds apart) instead of run by run.
    """

    def __init__(self, train_ds, val_ds, collate, *, n_features: int, seed: int, scale):
        torch.manual_seed(seed)
        self.challenge = get_challenge(2)
        self.model = build_model(
            "cnn", n_chans=train_ds.n_channels, n_times=train_ds.n_times, n_features=n_features
        )
        self.optimizer = self.challenge.make_optimizer(self.model.parameters())
        self.loss_fn = self.challenge.make_loss()
        self.train_loader = _loader(train_ds, workers=2, collate=collate, seed=seed)
        # Validation is not timed: one batch in the main process keeps the rounds short.
        self.val_loader = _loader(val_ds, workers=0, collate=collate, seed=seed)
        self.scale = scale
        self.state = LoopState()

    def epoch(self) -> tuple[float, dict]:
        """Train and validate one more epoch: (training batches/s, lookup figures)."""
        fit(
            self.model,
            self.train_loader,
            self.val_loader,
            optimizer=self.optimizer,
            loss_fn=self.loss_fn,
            device=torch.device("cpu"),
            epochs=self.state.next_epoch + 1,
            state=self.state,
            scale=self.scale,
            primary_metric="val_subject_nrmse",
            on_epoch_start=self.train_loader.sampler.set_epoch,
            progress=False,
            echo=lambda _: None,
        )
        last = self.state.history[-1]
        extra = {
            "hit_rate": last.get("feature_cache_hit_rate"),
            "lookup_ms": last.get("feature_lookup_ms") or 0.0,
            "train_s": last["train_s"],
        }
        return last["batches_per_s"], extra


def _materialized_store(settings: Settings, c2: list[str], participants: Path):
    """Build, apply and materialize the features; (service, columns, summary idx, subjects, matrix)."""
    build_features(settings.features_dir, c2, participants, BuildOptions(progress=False))
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.apply()
        client.materialize()
        service = INPUT_SERVICES[2]
        columns = client.matrix_columns(service)
        subjects = sorted(set(build_index(c2).subjects.tolist()))
        matrix, _ = client.get_online_matrix(subjects, service)
    idx = select_columns(columns, "summary")
    return service, columns, idx, subjects, np.asarray(matrix, np.float32)[:, idx]


def section_steps(demo_dir: Path, tmp: Path, rounds: int) -> None:
    """2. Steps/s with online features (cache off and on) against preloaded ones: one live run
    per source, their epochs interleaved (``rounds`` epochs each after one warm-up epoch)."""
    c2 = [str(demo_dir / "challenge2_R1.h5"), str(demo_dir / "challenge2_R2.h5")]
    server = start_redis(free_port(), tmp / "redis")
    try:
        settings = Settings(
            redis_url=server.uri, data_dir=tmp / "data", feature_repo=ROOT / "feature_repo"
        )
        t = time.perf_counter()
        service, columns, idx, subjects, matrix = _materialized_store(
            settings, c2, demo_dir / "participants.tsv"
        )
        print(
            f"\n2. training steps: features built, applied, materialized in "
            f"{time.perf_counter() - t:.1f} s"
        )
        index = build_index(c2)
        split = make_split(index, seed=0)
        scaler = FeatureScaler.fit(matrix[[subjects.index(s) for s in split.train_subjects]])
        stats = compute_channel_stats(index, split.train)
        train_ds = WindowDataset(
            index, split.train, crop_samples=200, random_crop=True, stats=stats
        )
        val_ds = WindowDataset(index, split.val[:32], crop_samples=200, stats=stats)
        y = index.targets[split.train]
        scale = TargetScale(float(y.mean()), float(y.std()))
        # Cache on next to preloaded in both orders of _alternating (the checked pair).
        sources = {
            "preloaded": TableFeatureSource(
                "preloaded", service, [columns[i] for i in idx], subjects, matrix
            ),
            "online, cache on": OnlineFeatureSource(
                settings, service, columns, idx, cache_size=4096
            ),
            "online, cache off": OnlineFeatureSource(settings, service, columns, idx, cache_size=0),
        }
        print(
            f"   {len(train_ds)} training windows, batch 32, 2 workers, compact CNN with "
            f"{len(idx)} features; one run per source, {rounds} measured epochs each after 1 "
            "warm-up, interleaved epoch by epoch"
        )

        runs = {
            name: StepsRun(
                train_ds,
                val_ds,
                BatchCollate(source, scaler),
                n_features=len(idx),
                seed=0,
                scale=scale,
            )
            for name, source in sources.items()
        }
        _alternating({name: run.epoch for name, run in runs.items()}, 1)  # warm-up epoch
        results = _alternating({name: run.epoch for name, run in runs.items()}, rounds)
        _print_steps(results)
    finally:
        stop_process(server.pid)


def _overall_rate(runs: list) -> float:
    """Training batches per second over all of a source's measured epochs."""
    return sum(r[0] * r[1]["train_s"] for r in runs) / sum(r[1]["train_s"] for r in runs)


def _epoch_range(runs: list) -> str:
    rates = [r[0] for r in runs]
    return f"epochs {min(rates):.2f}-{max(rates):.2f}"


def _online_line(name: str, results: dict[str, list], base: float) -> str:
    """One online source: steps/s over all its epochs against preloaded, lookups, hit rate."""
    runs = results[name]
    rate = _overall_rate(runs)
    pairs = _pair_ratio(results, name, "preloaded", key=lambda r: r[0])
    lookup = statistics.median(r[1]["lookup_ms"] for r in runs)
    hits = [r[1]["hit_rate"] for r in runs if r[1]["hit_rate"] is not None]
    hit_text = f"{min(hits):.0%}-{max(hits):.0%}" if hits else "-"
    return (
        f"   {name:18s} {rate:6.2f} steps/s, {rate / base:.2f}x preloaded ({_epoch_range(runs)}; "
        f"adjacent epoch pairs median {statistics.median(pairs):.2f}x, range "
        f"{pairs[0]:.2f}-{pairs[-1]:.2f}), lookup {lookup:.1f} ms/batch in the workers, "
        f"hit rate {hit_text}"
    )


def _print_steps(results: dict[str, list]) -> None:
    """Each source's steps/s over all its epochs (interleaved with the others', so load drifts
    hit all alike) against preloaded; the checked ratio is that of cached online lookups."""
    base = _overall_rate(results["preloaded"])
    print(f"   {'preloaded':18s} {base:6.2f} steps/s ({_epoch_range(results['preloaded'])})")
    for name in results:
        if name != "preloaded":
            print(_online_line(name, results, base))
    on = _overall_rate(results["online, cache on"]) / base
    print(
        f"   online with cache / preloaded: {on:.2f}x over {len(results['preloaded'])} "
        f"interleaved epochs each {check('online with cache / preloaded', on, 0.97)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--demo-dir",
        type=Path,
        default=None,
        help="existing demo data (default: write the default demo to a temp dir)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="repetitions of each loader measurement"
    )
    parser.add_argument(
        "--step-rounds",
        type=int,
        default=30,
        help="measured epochs of each source's training run (steps), interleaved",
    )
    parser.add_argument(
        "--loader-epochs",
        type=int,
        default=6,
        help="measured passes over the file per loader repetition",
    )
    parser.add_argument(
        "--loader-only", action="store_true", help="run only the loader measurement"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 2))
    # As in `eegfs train`, whose process runs the loader: freed batch buffers stay in the heap
    # (forked workers inherit it). Without it glibc's dynamic mmap threshold makes every
    # measurement depend on what the process allocated before (a torch DataLoader run left the
    # next WindowLoader run up to 25 % slower).
    retained = retain_freed_memory()
    print(
        f"cores: {os.cpu_count()}, torch {torch.__version__}, threads in main "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, freed memory "
        f"{'retained' if retained else 'returned (not glibc)'} as in `eegfs train`"
    )
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        tmp = Path(tmp)
        demo_dir = args.demo_dir
        if demo_dir is None or not (demo_dir / "challenge2_R1.h5").exists():
            t = time.perf_counter()
            demo_dir = write_demo_data(tmp / "demo", seed=0, progress=False).out_dir
            print(f"demo data written in {time.perf_counter() - t:.1f} s")
        section_loader(demo_dir, args.repeats, args.loader_epochs)
        if not args.loader_only:
            section_steps(demo_dir, tmp, args.step_rounds)
    missed = [(name, target, value) for name, target, value in TARGETS if value < target]
    for name, target, value in missed:
        print(f"missed: {name} {value:.2f}x < {target:.2f}x", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
