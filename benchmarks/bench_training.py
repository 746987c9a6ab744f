"""Training benchmarks (issue 5, point 10); one run, ratios printed.

1. Loader throughput (windows/s) over a gzip-compressed Challenge 2 HDF5 file with DataLoader
   ``num_workers=0`` versus ``num_workers=2`` (the training dataset: lazy per-worker handles,
   random 2 s crops, per-channel normalisation; the training loader ``WindowLoader``, whose
   workers return batches through a reused shared-memory slot pool, and which with 0 workers
   is a plain DataLoader). Target: at least 1.7x on 2 cores.
2. Training steps per second of the default model with subject features looked up online per
   batch (in the loader workers) versus the same features preloaded in memory, with the feature
   client's in-process cache off and on (hit rate printed). Target: at least 0.97x with the cache
   on.

Self-contained: it writes the default demo data (or reuses ``--demo-dir`` when it holds the
files), builds the features into a temporary directory, and runs a private redis-server for the
online store. Each measurement is repeated; the loader reports the median of back-to-back pairs
(alternating which side runs first) and the CPU time per window of both sides, whose ratio is
what 2 idle cores could reach (the machine may be shared). Run: ``.venv/bin/python benchmarks/bench_training.py`` (about 2-4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featurestore.client import FeatureStoreClient  # noqa: E402
from featurestore.labels import INPUT_SERVICES  # noqa: E402
from pipelines.build import BuildOptions, build_features  # noqa: E402
from pipelines.demo_data import write_demo_data  # noqa: E402
from services.local import free_port, start_redis, stop_process  # noqa: E402
from services.settings import Settings  # noqa: E402
from training.challenges import get_challenge  # noqa: E402
from training.data import (  # noqa: E402
    EpochSampler,
    WindowDataset,
    build_index,
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
from training.loader import WindowLoader  # noqa: E402
from training.loop import LoopState, TargetScale, fit  # noqa: E402
from training.models import build_model  # noqa: E402
from training.splits import make_split  # noqa: E402


def _loader(dataset, *, workers: int, collate, batch_size: int = 32, seed: int = 0):
    return WindowLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle=True, seed=seed),
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )


def bench_loader(dataset, workers: int, epochs: int) -> tuple[float, float]:
    """(windows per second, CPU ms per window of this process and its workers) over ``epochs``
    passes after one warm-up pass (workers started, file handles open, pages cached)."""
    import psutil

    me = psutil.Process()
    loader = _loader(dataset, workers=workers, collate=BatchCollate())
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
    del loader
    return n / seconds, cpu / n * 1e3


def bench_steps(
    train_ds, val_ds, collate, *, n_features: int, epochs: int, seed: int, scale: TargetScale
) -> tuple[float, dict]:
    """Training batches per second (train part of each epoch) after one warm-up epoch."""
    torch.manual_seed(seed)
    challenge = get_challenge(2)
    model = build_model(
        "cnn", n_chans=train_ds.n_channels, n_times=train_ds.n_times, n_features=n_features
    )
    opt = challenge.make_optimizer(model.parameters())
    train_loader = _loader(train_ds, workers=2, collate=collate, seed=seed)
    val_loader = _loader(val_ds, workers=2, collate=collate, seed=seed)
    state = fit(
        model,
        train_loader,
        val_loader,
        optimizer=opt,
        loss_fn=challenge.make_loss(),
        device=torch.device("cpu"),
        epochs=epochs + 1,
        state=LoopState(),
        scale=scale,
        primary_metric="val_subject_nrmse",
        on_epoch_start=lambda e: train_loader.sampler.set_epoch(e),
        progress=False,
        echo=lambda _: None,
    )
    measured = state.history[1:]
    rate = statistics.mean(h["batches_per_s"] for h in measured)
    extra = {
        "hit_rate": [h.get("feature_cache_hit_rate") for h in measured],
        "lookup_ms": statistics.mean(h.get("feature_lookup_ms") or 0.0 for h in measured),
    }
    return rate, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--demo-dir",
        type=Path,
        default=None,
        help="existing demo data (default: write the default demo to a temp dir)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument(
        "--epochs", type=int, default=2, help="measured epochs per repetition (steps)"
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
    print(
        f"cores: {os.cpu_count()}, torch {torch.__version__}, threads in main {torch.get_num_threads()}"
    )

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        tmp = Path(tmp)
        demo_dir = args.demo_dir
        if demo_dir is None or not (demo_dir / "challenge2_R1.h5").exists():
            t = time.perf_counter()
            demo = write_demo_data(tmp / "demo", seed=0, progress=False)
            demo_dir = demo.out_dir
            print(f"demo data written in {time.perf_counter() - t:.1f} s")
        c2 = [str(demo_dir / "challenge2_R1.h5"), str(demo_dir / "challenge2_R2.h5")]

        # --- 1. loader throughput --------------------------------------------------------------
        index = build_index(c2[:1])
        split = make_split(index, seed=0)
        stats = compute_channel_stats(index, split.train)
        ds = WindowDataset(index, crop_samples=200, random_crop=True, stats=stats)
        print(
            f"\n1. loader: {Path(c2[0]).name}, {len(ds)} windows of 129 x 400 (gzip, one window "
            f"per chunk), batch 32, random 2 s crops, normalised"
        )
        rates: dict[int, list[float]] = {0: [], 2: []}
        cpu: dict[int, list[float]] = {0: [], 2: []}
        for rep in range(args.repeats):
            for workers in (0, 2) if rep % 2 == 0 else (2, 0):  # alternate: drifts favour neither
                rate, ms = bench_loader(ds, workers, args.loader_epochs)
                rates[workers].append(rate)
                cpu[workers].append(ms)
        for w in (0, 2):
            print(
                f"   num_workers={w}: median {statistics.median(rates[w]):7.0f} windows/s, best "
                f"{max(rates[w]):7.0f}  (runs: "
                + ", ".join(f"{r:.0f}" for r in rates[w])
                + f"); CPU {statistics.median(cpu[w]):.3f} ms/window (main + workers)"
            )
        ratio = max(rates[2]) / max(rates[0])
        pairs = sorted(b / a for a, b in zip(rates[0], rates[2], strict=True))
        pair_med = statistics.median(pairs)
        ceiling = (
            min(2, os.cpu_count() or 1) * statistics.median(cpu[0]) / statistics.median(cpu[2])
        )
        print(
            f"   ratio workers 2 / 0: {pair_med:.2f}x median of {args.repeats} back-to-back pairs "
            f"(range {pairs[0]:.2f}-{pairs[-1]:.2f}), {ratio:.2f}x best/best  (target >= 1.7x) "
            f"{'OK' if pair_med >= 1.7 else 'BELOW TARGET'}"
        )
        print(
            f"   CPU-bound ceiling on {min(2, os.cpu_count() or 1)} idle cores: {ceiling:.2f}x "
            "(CPU per window of workers=0 / workers=2; the rest is other load on the machine)"
        )

        if args.loader_only:
            return
        # --- 2. steps/s with online features vs preloaded ----------------------------------------
        server = start_redis(free_port(), tmp / "redis")
        try:
            settings = Settings(
                redis_url=server.uri, data_dir=tmp / "data", feature_repo=ROOT / "feature_repo"
            )
            t = time.perf_counter()
            build_features(
                settings.features_dir,
                c2,
                demo_dir / "participants.tsv",
                BuildOptions(progress=False),
            )
            with FeatureStoreClient(settings, cache_size=0) as client:
                client.apply()
                client.materialize()
                service = INPUT_SERVICES[2]
                columns = client.matrix_columns(service)
                idx = select_columns(columns, "summary")
                index = build_index(c2)
                split = make_split(index, seed=0)
                subjects = sorted(set(index.subjects.tolist()))
                matrix, _ = client.get_online_matrix(subjects, service)
            print(
                f"\n2. training steps: features built, applied, materialized in "
                f"{time.perf_counter() - t:.1f} s"
            )
            matrix = np.asarray(matrix, np.float32)[:, idx]
            train_rows = [subjects.index(s) for s in split.train_subjects]
            scaler = FeatureScaler.fit(matrix[train_rows])
            stats = compute_channel_stats(index, split.train)
            train_ds = WindowDataset(
                index, split.train, crop_samples=200, random_crop=True, stats=stats
            )
            val_ds = WindowDataset(index, split.val, crop_samples=200, stats=stats)
            y = index.targets[split.train]
            scale = TargetScale(float(y.mean()), float(y.std()))
            sources = {
                "preloaded": TableFeatureSource(
                    "preloaded", service, [columns[i] for i in idx], subjects, matrix
                ),
                "online, cache off": OnlineFeatureSource(
                    settings, service, columns, idx, cache_size=0
                ),
                "online, cache on": OnlineFeatureSource(
                    settings, service, columns, idx, cache_size=4096
                ),
            }
            print(
                f"   {len(train_ds)} training windows, batch 32, 2 workers, compact CNN with "
                f"{len(idx)} features; {args.epochs} measured epochs after 1 warm-up"
            )
            results: dict[str, list[float]] = {k: [] for k in sources}
            extras: dict[str, dict] = {}
            for rep in range(args.repeats):
                order = list(sources.items())
                if rep % 2:  # alternate the order so drifts in machine load do not favour one
                    order.reverse()
                for name, source in order:
                    collate = BatchCollate(source, scaler)
                    rate, extra = bench_steps(
                        train_ds,
                        val_ds,
                        collate,
                        n_features=len(idx),
                        epochs=args.epochs,
                        seed=0,
                        scale=scale,
                    )
                    results[name].append(rate)
                    extras[name] = extra
            base = max(results["preloaded"])
            for name in sources:
                best_rate = max(results[name])
                hit = extras[name]["hit_rate"]
                hit_txt = ""
                if name != "preloaded":
                    shown = [f"{h:.0%}" if h is not None else "-" for h in hit]
                    hit_txt = (
                        f", lookup {extras[name]['lookup_ms']:.1f} ms/batch in the workers,"
                        f" hit rate {'/'.join(shown)}"
                    )
                pairs = statistics.median(
                    r / p for p, r in zip(results["preloaded"], results[name], strict=True)
                )
                print(
                    f"   {name:18s} {best_rate:6.2f} steps/s  ratio {best_rate / base:.2f}x best, "
                    f"{pairs:.2f}x median pair{hit_txt}  (runs: "
                    + ", ".join(f"{r:.2f}" for r in results[name])
                    + ")"
                )
            on = max(results["online, cache on"]) / base
            print(
                f"   online with cache / preloaded: {on:.2f}x best of {args.repeats}  (target >= "
                f"0.97x) {'OK' if on >= 0.97 else 'BELOW TARGET'}"
            )
        finally:
            stop_process(server.pid)


if __name__ == "__main__":
    main()
