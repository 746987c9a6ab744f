"""Benchmark of serving new recordings: ``eegfs features push`` and ``eegfs predict``.

    .venv/bin/python benchmarks/bench_predict.py            # 3 pushes of each kind, 1 predict
    .venv/bin/python benchmarks/bench_predict.py --reps 5 --predict-windows 40000
    .venv/bin/python benchmarks/bench_predict.py --only predict

Sections (targets from the project's issue):

* push: latency from a one-subject HDF5 file (demo shapes: 129 channels, 20 windows of 4 s at
  100 Hz, plus that subject's participants.tsv) to its features being returned by an online
  lookup, on a store already built from the demo data, applied and materialized.
  - in process: ``push_file`` with a warm client, then ``get_online_features`` until the
    subject's ``n_windows`` is there (it is, within the call). Target: <= 2 s (median).
  - baseline, same process and store: what serving a new file took before push, a
    ``build_features`` of the file then ``materialize`` (Feast reads the table directories).
  - CLI wall time: ``eegfs features push`` as a subprocess (imports and Feast start-up
    included), reported without a target.
  The kinds run in turn on fresh files, each more than one second after the previous snapshot
  (a push within the same second as the last snapshot waits for the next second, see
  featurestore/push.py).

* predict: ``eegfs predict`` end to end as a CLI subprocess (imports, registry lookup and
  checksum, file index and shape check, sha256 of the input, subject features from the
  model's snapshot, inference, Parquet, the MongoDB document) on a Challenge 2 file of
  ``--predict-windows`` windows (the demo R2 windows repeated), vs the training loop's
  evaluation pass over the same file and model in one process (the run's validation loader:
  batch 64, 2 workers, online feature source; :func:`training.loop.predict`), timed from the
  index to the predictions. Throughput ratio CLI / in process; target >= 0.8. The model is
  trained for one epoch on the demo data (R2 as validation release) and registered first.

A private redis-server and MongoDB-wire server are started (nothing touches your REDIS_URL or
MONGO_URI) and the data live in a temporary directory. Exits with status 1 when a target it
prints is missed, else 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demodata.writer import write_demo_data  # noqa: E402
from featurestore.client import FeatureStoreClient  # noqa: E402
from featurestore.push import push_file  # noqa: E402
from pipelines.build import BuildOptions, build_features  # noqa: E402
from services.connections import redis_url_with_db  # noqa: E402
from services.local import free_port, start_mongo, start_redis, stop_process  # noqa: E402
from services.settings import Settings  # noqa: E402

PUSH_TARGET_S = 2.0
PREDICT_TARGET_RATIO = 0.8
MODEL = "bench-c2"
SERVICE = "challenge2_inputs_v1"
OPTS = BuildOptions(progress=False)


def _one_subject_file(out: Path, seed: int) -> tuple[Path, Path, str]:
    """A Challenge 2 file of one new subject (demo shapes) and its participants.tsv."""
    demo = write_demo_data(out, seed=seed, subjects_per_release=1, releases=("R9",), progress=False)
    return demo.challenge2["R9"], demo.participants, demo.subjects["R9"][0]


def _wait_online(client: FeatureStoreClient, subject: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        row = client.get_online_features([subject], SERVICE)
        if row.loc[0, "n_windows"] == row.loc[0, "n_windows"]:  # not NaN
            return
        time.sleep(0.01)
    raise RuntimeError(f"{subject} did not appear online within {deadline_s} s")


def _pause_past_last_snapshot() -> None:
    time.sleep(1.1)


def _time_push(settings, client, path, tsv, subject) -> float:
    t0 = time.perf_counter()
    push_file(settings, path, participants_path=tsv, options=OPTS, client=client)
    _wait_online(client, subject)
    return time.perf_counter() - t0


def _time_build_materialize(settings, client, path, tsv, subject) -> float:
    t0 = time.perf_counter()
    build_features(settings.features_dir, [path], tsv, OPTS)
    client.materialize()
    _wait_online(client, subject)
    return time.perf_counter() - t0


def _time_cli(settings, path, tsv, subject) -> float:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "EEGFS_DATA_DIR": str(settings.data_dir),
        "EEGFS_FEATURE_REPO": str(settings.feature_repo),
        "EEGFS_ENV_FILE": "",
    }
    command = [sys.executable, "-m", "eegfs", "features", "push", "--input", str(path)]
    command += ["--participants", str(tsv), "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def measure_push(work: Path, redis_url: str, *, reps: int = 3) -> dict:
    """Push latency figures on a demo store under ``work`` served by ``redis_url``.

    Returns a dict: ``push_s`` / ``baseline_s`` / ``cli_s`` (lists of seconds),
    ``push_median_s``, ``baseline_median_s``, ``cli_median_s``, ``ratio`` (baseline / push),
    ``target_s`` and ``met``.
    """
    settings = Settings(
        redis_url=redis_url,
        data_dir=work / "data",
        feature_repo=ROOT / "feature_repo",
        redis_source="configured",
    )
    demo = write_demo_data(work / "demo", seed=0, progress=False)
    build_features(settings.features_dir, demo.files, demo.participants, OPTS)
    figures: dict = {"push_s": [], "baseline_s": [], "cli_s": []}
    with FeatureStoreClient(settings) as client:
        client.apply()
        client.materialize()
        for i in range(reps):
            kinds = (("push_s", _time_push), ("baseline_s", _time_build_materialize))
            for k, (kind, timer) in enumerate(kinds):  # a new subject (seed) every time
                path, tsv, subject = _one_subject_file(work / f"{kind}{i}", seed=1000 + 2 * i + k)
                _pause_past_last_snapshot()
                figures[kind].append(timer(settings, client, path, tsv, subject))
            path, tsv, subject = _one_subject_file(work / f"cli{i}", seed=5000 + i)
            _pause_past_last_snapshot()
            figures["cli_s"].append(_time_cli(settings, path, tsv, subject))
            _wait_online(client, subject)
    for kind in ("push_s", "baseline_s", "cli_s"):
        figures[kind.replace("_s", "_median_s")] = statistics.median(figures[kind])
    figures["ratio"] = figures["baseline_median_s"] / figures["push_median_s"]
    figures["target_s"] = PUSH_TARGET_S
    figures["met"] = figures["push_median_s"] <= PUSH_TARGET_S
    return figures


def _print_push(f: dict) -> None:
    def row(label: str, key: str) -> str:
        values = " ".join(f"{v:.2f}" for v in f[key])
        return f"  {label:34s} median {f[key.replace('_s', '_median_s')]:6.2f} s  ({values})"

    print("push: one-subject file -> online lookup returns it")
    print(row("push_file, in process", "push_s"))
    print(row("baseline: build + materialize", "baseline_s"))
    print(row("eegfs features push (CLI wall)", "cli_s"))
    state = "met" if f["met"] else "MISSED"
    print(f"  baseline / push: {f['ratio']:.1f}x; target push <= {f['target_s']:.1f} s: {state}")


# --- predict ------------------------------------------------------------------------------------
def _tiled_file(src: Path, dst: Path, n_windows: int) -> Path:
    """``src``'s windows repeated up to ``n_windows`` (raw gzip chunks copied, not recompressed)."""
    import h5py
    import numpy as np

    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        ds = f["data"]
        n = ds.shape[0]
        rows = np.arange(n_windows) % n
        out = g.create_dataset(
            "data",
            shape=(n_windows, *ds.shape[1:]),
            dtype=ds.dtype,
            chunks=ds.chunks,
            compression="gzip",
            shuffle=True,
        )
        raw = [ds.id.read_direct_chunk((i, 0, 0)) for i in range(n)]
        for i, r in enumerate(rows.tolist()):
            mask, chunk = raw[r]
            out.id.write_direct_chunk((i, 0, 0), chunk, mask)
        for name in ("targets", "subjects", "p_factors"):
            g.create_dataset(name, data=f[name][()][rows])
        g.attrs.update(dict(f.attrs))
        g.attrs["n_windows"] = n_windows
    return dst


def _predict_store(work: Path, redis_url: str, mongo_uri: str) -> tuple[Settings, object]:
    """A demo store built, applied and materialized, and a tracking database."""
    settings = Settings(
        redis_url=redis_url,
        mongo_uri=mongo_uri,
        mongo_db="bench_predict",
        data_dir=work / "data",
        feature_repo=ROOT / "feature_repo",
        redis_source="configured",
        mongo_source="configured",
    )
    demo = write_demo_data(work / "demo", seed=0, progress=False)
    build_features(settings.features_dir, demo.files, demo.participants, OPTS)
    with FeatureStoreClient(settings) as client:
        client.apply()
        client.materialize()
    return settings, demo


def _train_and_register(settings: Settings, demo) -> str:
    """One epoch on the demo Challenge 2 files (R2 validation); best checkpoint registered."""
    from bson import ObjectId

    from tracking.database import open_database
    from tracking.registry import ModelRegistry
    from tracking.schema import CHECKPOINTS
    from training.config import TrainConfig
    from training.runner import train

    files = tuple(str(p) for p in sorted(demo.challenge2.values()))
    config = TrainConfig(challenge=2, data=files, val_release="R2", epochs=1, seed=0)
    result = train(settings, config, progress=False)
    with open_database(settings) as db:
        best = db[CHECKPOINTS].find_one(
            {"experiment_id": ObjectId(result.experiment_id), "is_best": True}
        )
        ModelRegistry(db).register(MODEL, best["_id"], aliases=["production"])
        return best["path"]


def _time_evaluation_pass(settings: Settings, checkpoint_path: str, path: Path) -> float:
    """Seconds of training's evaluation pass over ``path`` (validation loader of the run)."""
    import torch

    from training.checkpoints import load_checkpoint
    from training.config import TrainConfig
    from training.data import WindowDataset
    from training.features import BatchCollate, OnlineFeatureSource
    from training.index import build_index
    from training.loop import predict
    from training.models import build_model
    from training.prepare import make_loader, share_cores_with_workers

    ckpt = load_checkpoint(checkpoint_path)
    config = TrainConfig.from_dict(ckpt.config)
    info = ckpt.model_info
    model = build_model(
        config.model,
        n_chans=info["n_chans"],
        n_times=info["n_times"],
        n_features=info["n_features"],
    )
    model.load_state_dict(ckpt.model_state)
    with FeatureStoreClient(settings, cache_size=0) as client:
        columns = client.matrix_columns(SERVICE)
    idx = [columns.index(c) for c in ckpt.feature_columns]
    source = OnlineFeatureSource(settings, SERVICE, columns, idx, cache_size=config.cache_size)
    collate = BatchCollate(source, ckpt.feature_scaler, policy=config.missing_features)
    t0 = time.perf_counter()
    index = build_index([str(path)], keep_unlabelled=True)
    dataset = WindowDataset(index, crop_samples=info["n_times"], stats=ckpt.channel_stats)

    cpu = torch.device("cpu")
    loader = make_loader(  # the run's validation loader (training.prepare.make_loaders)
        dataset,
        batch_size=max(64, config.batch_size),
        shuffle=False,
        seed=config.seed,
        workers=config.workers,
        collate=collate,
        device=cpu,
    )
    threads = torch.get_num_threads()
    share_cores_with_workers(cpu, config.workers)  # as a training run does
    try:
        _, y_pred, _, _ = predict(model, loader, cpu, ckpt.target_scale)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    del loader
    source.close()
    dataset.close()
    if len(y_pred) != len(index):
        raise RuntimeError(f"{len(y_pred)} predictions for {len(index)} windows")
    return seconds


def _time_predict_cli(settings: Settings, path: Path, out: Path) -> float:
    env = {**os.environ, **settings.to_env(), "EEGFS_ENV_FILE": ""}
    command = [sys.executable, "-m", "eegfs", "predict", "--model", f"{MODEL}@production"]
    command += ["--data", str(path), "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"eegfs predict failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def _last_prediction_timing(settings: Settings) -> dict:
    """The ``timing`` of the newest ``predictions`` document (the CLI's own phases)."""
    from tracking.predictions import list_predictions

    (doc,) = list_predictions(settings, model=MODEL, limit=1)
    return doc["timing"]


def measure_predict(
    work: Path, redis_url: str, mongo_uri: str, *, n_windows: int = 24000, reps: int = 1
) -> dict:
    """``eegfs predict`` (CLI wall) vs training's evaluation pass, on ``n_windows`` windows.

    Returns a dict: ``windows``, ``cli_s`` / ``eval_s`` (lists), their medians, windows/s of
    each, ``ratio`` (CLI windows/s over in-process windows/s), ``target`` and ``met``.
    """
    settings, demo = _predict_store(work, redis_url, mongo_uri)
    checkpoint = _train_and_register(settings, demo)
    big = _tiled_file(demo.challenge2["R2"], work / f"challenge2_R2x{n_windows}.h5", n_windows)
    figures: dict = {"windows": n_windows, "cli_s": [], "eval_s": []}
    for i in range(reps):
        figures["eval_s"].append(_time_evaluation_pass(settings, checkpoint, big))
        figures["cli_s"].append(_time_predict_cli(settings, big, work / f"pred{i}.parquet"))
    figures["cli_timing"] = _last_prediction_timing(settings)
    for kind in ("cli_s", "eval_s"):
        median = statistics.median(figures[kind])
        figures[kind.replace("_s", "_median_s")] = median
        figures[kind.replace("_s", "_windows_per_s")] = n_windows / median
    figures["ratio"] = figures["cli_windows_per_s"] / figures["eval_windows_per_s"]
    figures["target"] = PREDICT_TARGET_RATIO
    figures["met"] = figures["ratio"] >= PREDICT_TARGET_RATIO
    return figures


def _print_predict(f: dict) -> None:
    print(f"predict: {f['windows']:,} Challenge 2 windows, registered model, CPU")
    for label, kind in (
        ("eegfs predict (CLI wall, end to end)", "cli"),
        ("baseline: training's evaluation pass", "eval"),
    ):
        values = " ".join(f"{v:.2f}" for v in f[f"{kind}_s"])
        print(
            f"  {label:38s} median {f[f'{kind}_median_s']:6.2f} s  "
            f"{f[f'{kind}_windows_per_s']:8,.0f} windows/s  ({values})"
        )
    phases = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in f["cli_timing"].items())
    print(f"  CLI phases (s, last run, after start-up): {phases}")
    state = "met" if f["met"] else "MISSED"
    print(f"  CLI / in process: {f['ratio']:.2f}x; target >= {f['target']:.1f}x: {state}")


def main(argv: list[str] | None = None) -> int:
    # The baseline's materialize goes through Feast's file store, whose dask code warns of a
    # pandas change on every call (eegfs sends library warnings to its log; this prints figures).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"dask\.")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="pushes of each kind")
    parser.add_argument("--predict-reps", type=int, default=1, help="predictions of each kind")
    parser.add_argument(
        "--predict-windows", type=int, default=24000, help="windows of the predicted file"
    )
    parser.add_argument("--only", choices=["push", "predict"], default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    server = start_redis(free_port(), work / "redis")
    mongo = None
    missed = []
    try:
        if args.only != "predict":
            figures = measure_push(work / "push", server.uri, reps=args.reps)
            _print_push(figures)
            missed += [] if figures["met"] else ["push latency"]
        if args.only != "push":
            mongo = start_mongo(free_port(), work / "mongo")
            figures = measure_predict(
                work / "predict",
                redis_url_with_db(server.uri, 1),
                mongo.uri,
                n_windows=args.predict_windows,
                reps=args.predict_reps,
            )
            _print_predict(figures)
            missed += [] if figures["met"] else ["predict throughput"]
    finally:
        for proc in (server, mongo):
            if proc is not None:
                stop_process(proc.pid)
        shutil.rmtree(work, ignore_errors=True)
    if missed:
        print(f"{len(missed)} target(s) MISSED: " + "; ".join(missed))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
