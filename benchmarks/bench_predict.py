"""Benchmark of serving new recordings: ``eegfs features push`` (and, later, prediction).

    .venv/bin/python benchmarks/bench_predict.py            # 3 pushes of each kind
    .venv/bin/python benchmarks/bench_predict.py --reps 5

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

A private redis-server is started (nothing touches your REDIS_URL) and the data live in a
temporary directory. Exits with status 1 when a target it prints is missed, else 0.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demodata.writer import write_demo_data  # noqa: E402
from featurestore.client import FeatureStoreClient  # noqa: E402
from featurestore.push import push_file  # noqa: E402
from pipelines.build import BuildOptions, build_features  # noqa: E402
from services.local import free_port, start_redis, stop_process  # noqa: E402
from services.settings import Settings  # noqa: E402

PUSH_TARGET_S = 2.0
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="pushes of each kind")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    server = start_redis(free_port(), work / "redis")
    try:
        figures = measure_push(work, server.uri, reps=args.reps)
    finally:
        stop_process(server.pid)
        shutil.rmtree(work, ignore_errors=True)
    _print_push(figures)
    missed = [] if figures["met"] else ["push latency"]
    if missed:
        print(f"{len(missed)} target(s) MISSED: " + "; ".join(missed))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
