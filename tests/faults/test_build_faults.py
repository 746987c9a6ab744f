"""Fault injection for `eegfs features build`: killed builds, failing writes, two builds at once.

Promises checked here (docs/features.md, "What a failed or killed build leaves"):

* A build killed with SIGKILL at any point (computing, staging, between the commit record and
  the renames, between renames, before the manifest is saved, before the staging directory is
  removed, while promoting held-back rows, before the report) leaves no snapshot that will not
  be completed: every file visible in a table directory is listed in the manifest or belongs to
  a snapshot whose commit record exists (the next writer rolls it forward).
* The next build recovers: no partial and no duplicate snapshot, no staging or temporary file,
  and the same values as a build that was never interrupted.
* An exception (Ctrl-C, a full disk) half-way leaves nothing visible; a rerun finishes the job.
* Two builds started together end with exactly one committed copy of each snapshot.

Killed builds are real ``eegfs features build`` subprocesses (``build_fault_runner.py``): each
stops at a chosen call, the test looks at the store there and kills it with SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import bandpower
from pipelines import feature_tables as ft
from pipelines.build import BuildOptions, build_features
from pipelines.hdf5_layout import default_channel_names
from tests.features.features_testlib import write_h5, write_participants

RUNNER = Path(__file__).with_name("build_fault_runner.py")
REPO = Path(__file__).resolve().parents[2]
A = ["NDARAA000001", "NDARAA000002"]
B = ["NDARBB000001", "NDARBB000002", "NDARBB000003"]
OPTS = BuildOptions(progress=False, chunk_windows=4)
ACCEPT = BuildOptions(progress=False, chunk_windows=4, accept_failing=True)
#: Windows per challenge in the inputs (c2: 2 subjects x 5, c1: 3 subjects x 4).
WINDOWS = {"challenge2": 10, "challenge1": 12}
WAIT_S = 180  # generous: subprocesses import pandas, pyarrow, h5py on a shared machine


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("build-fault-inputs")
    c2 = write_h5(root / "c2.h5", subjects=A, windows_per_subject=5, seed=1)
    c1 = write_h5(root / "c1.h5", layout="challenge1", subjects=B, windows_per_subject=4, seed=2)
    tsv = write_participants(root / "participants.tsv", A + B)
    return c2.path, c1.path, tsv


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """Subject features of a build that was never interrupted."""
    fdir = tmp_path_factory.mktemp("build-fault-reference") / "features"
    c2, c1, tsv = inputs
    build_features(fdir, [c2, c1], tsv, OPTS)
    return _values(fdir)


# --- helpers ------------------------------------------------------------------------------------
def _manifest(fdir: Path) -> dict:
    return json.loads((fdir / "manifest.json").read_text())


def _values(fdir: Path) -> pd.DataFrame:
    """Every served subject row without its times (snapshot ids depend on content only)."""
    rows = pd.read_parquet(fdir / "subject_features").drop(columns=["event_timestamp", "created"])
    return rows.sort_values(["snapshot_id", "subject_id"]).reset_index(drop=True)


def _visible(fdir: Path) -> set[str]:
    """Parquet files in table directories (what Feast and directory readers see)."""
    return {
        p.relative_to(fdir).as_posix()
        for p in fdir.rglob("*.parquet")
        if ft.STAGING_NAME not in p.relative_to(fdir).parts
    }


def _listed(manifest: dict) -> set[str]:
    return {rel for s in manifest["snapshots"].values() for rel in s["files"].values()}


def _recorded_in_staging(fdir: Path) -> set[str]:
    """Files of snapshots whose commit record exists (the next writer rolls them forward)."""
    out = set()
    for record in (fdir / ft.STAGING_NAME).glob(f"*/{ft.COMMIT_RECORD}"):
        out |= set(json.loads(record.read_text())["files"].values())
    return out


def assert_no_unfinishable_snapshot(fdir: Path) -> None:
    """Every visible file is committed or will be rolled forward by the next writer."""
    manifest = _manifest(fdir) if (fdir / "manifest.json").exists() else {"snapshots": {}}
    stray = _visible(fdir) - _listed(manifest) - _recorded_in_staging(fdir)
    assert not stray, f"files visible but never to be committed: {sorted(stray)}"


def assert_store_consistent(fdir: Path, n_snapshots: int) -> dict:
    """No staging or temporary file, manifest == table directories, no duplicate rows."""
    manifest = _manifest(fdir)
    assert not (fdir / ft.STAGING_NAME).exists() and not list(fdir.rglob(".*.tmp"))
    assert len(manifest["snapshots"]) == n_snapshots, sorted(manifest["snapshots"])
    assert _visible(fdir) == _listed(manifest)
    for challenge, n in WINDOWS.items():
        win = pd.read_parquet(fdir / "window_features" / challenge)
        assert len(win) == n and not win.duplicated(["snapshot_id", "window_index"]).any()
    subj = pd.read_parquet(fdir / "subject_features")
    assert not subj.duplicated(["snapshot_id", "subject_id"]).any()
    assert (fdir / "quality_report.json").exists()
    return manifest


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "EEGFS_DATA_DIR": str(data_dir), **extra}


def start_build(data_dir: Path, kill: str, args: list, **env: str) -> subprocess.Popen:
    """An ``eegfs features build`` subprocess (stopping at ``kill``, see build_fault_runner)."""
    cmd = [sys.executable, str(RUNNER), kill, "--", "features", "build", "--no-progress"]
    cmd += ["--chunk-windows", "4", *map(str, args)]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(data_dir, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"the build ended ({proc.returncode}) before the point:\n{proc.stdout.read()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the build did not reach the point within {WAIT_S} s")
        time.sleep(0.01)


def kill_build_at(data_dir: Path, kill: str, args: list, tmp_path: Path) -> dict:
    """Run a build until it reaches ``kill``, check the store there, then SIGKILL it.

    Returns :func:`store_state` at the moment of the kill.
    """
    paused = tmp_path / f"paused-{time.monotonic_ns()}"
    proc = start_build(data_dir, kill, args, EEGFS_TEST_PAUSED=str(paused))
    try:
        _wait_for(paused, proc)
        assert_no_unfinishable_snapshot(data_dir / "features")
        state = store_state(data_dir / "features")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL
    return state


# --- SIGKILL at several points ------------------------------------------------------------------
def store_state(fdir: Path) -> dict:
    """What a killed build left: committed snapshots, commit records, staged and stray files."""
    manifest = _manifest(fdir) if (fdir / "manifest.json").exists() else {"snapshots": {}}
    staging = fdir / ft.STAGING_NAME
    return {
        "committed": len(manifest["snapshots"]),
        "records": len(list(staging.glob(f"*/{ft.COMMIT_RECORD}"))),
        "staged": len(list(staging.rglob("*.parquet"))),
        "moved_not_listed": len(_visible(fdir) - _listed(manifest)),
        "report": (fdir / "quality_report.json").exists(),
    }


#: Where each build is killed (see build_fault_runner.py) and what the store holds at that moment.
KILL_POINTS = {
    "first input half computed": (
        "pipelines.build_tables:window_batch:2:before",
        {"committed": 1, "records": 0, "staged": 1, "moved_not_listed": 0},
    ),
    "participants snapshot half staged": (
        "pyarrow.parquet:write_table:1:after",
        {"committed": 0, "records": 0, "staged": 1, "moved_not_listed": 0},
    ),
    "all files staged, before the commit record": (
        "pipelines.feature_tables:atomic_write_text:2:before:snapshot.json",
        {"committed": 1, "records": 0, "staged": 3, "moved_not_listed": 0},
    ),
    "commit record written, nothing moved": (
        "pipelines.feature_tables:atomic_write_text:2:after:snapshot.json",
        {"committed": 1, "records": 1, "staged": 3, "moved_not_listed": 0},
    ),
    "between two renames": (
        "os:replace:1:before:window_labels",
        {"committed": 1, "records": 1, "staged": 2, "moved_not_listed": 1},
    ),
    "renamed, manifest not saved": (
        "pipelines.feature_tables:atomic_write_text:2:before:manifest.json",
        {"committed": 1, "records": 1, "staged": 0, "moved_not_listed": 3},
    ),
    "manifest saved, staging not removed": (
        "pipelines.feature_tables:_remove_stage:2:before",
        {"committed": 2, "records": 1, "staged": 0, "moved_not_listed": 0},
    ),
    "second input half computed": (
        "pipelines.build_tables:window_batch:5:before",
        {"committed": 2, "records": 0, "staged": 1, "moved_not_listed": 0},
    ),
    "all committed, before the build report": (
        "pipelines.quality_report:atomic_write_text:1:before",
        {"committed": 3, "records": 0, "staged": 0, "moved_not_listed": 0, "report": False},
    ),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_build_killed_at_a_point_recovers_on_the_next_build(tmp_path, inputs, reference, point):
    c2, c1, tsv = inputs
    data = tmp_path / "data"
    kill, expected = KILL_POINTS[point]
    state = kill_build_at(data, kill, ["--input", c2, c1, "--participants", tsv], tmp_path)
    assert {k: state[k] for k in expected} == expected, state
    fdir = data / "features"
    rerun = build_features(fdir, [c2, c1], tsv, OPTS)
    assert {f.status for f in rerun.files} <= {"built", "skipped"} and rerun.n_held_back == 0
    manifest = assert_store_consistent(fdir, n_snapshots=3)  # participants, c2, c1
    assert manifest["channels"]["challenge1"] == default_channel_names(129)
    pd.testing.assert_frame_equal(_values(fdir), reference)
    again = build_features(fdir, [c2, c1], tsv, OPTS)  # and nothing left to do
    assert [f.status for f in again.files] == ["skipped", "skipped"]


def test_commit_cut_between_renames_is_completed_by_materialize_first(tmp_path, inputs, reference):
    """`features materialize` reads whole table directories: it completes the commit first."""
    c2, c1, tsv = inputs
    data = tmp_path / "data"
    kill_build_at(
        data,
        KILL_POINTS["between two renames"][0],
        ["--input", c2, "--participants", tsv],
        tmp_path,
    )
    fdir = data / "features"
    (staged,) = (fdir / ft.STAGING_NAME).iterdir()
    assert ft.finish_interrupted_build(fdir) == [staged.name]
    assert not (fdir / ft.STAGING_NAME).exists()
    rerun = build_features(fdir, [c2, c1], tsv, OPTS)
    assert [f.status for f in rerun.files] == ["skipped", "built"]  # completed, not rebuilt
    assert_store_consistent(fdir, n_snapshots=3)
    pd.testing.assert_frame_equal(_values(fdir), reference)


PROMOTION_KILL_POINTS = {
    "promotion staged, before its record": (
        "pipelines.feature_tables:atomic_write_text:1:before:snapshot.json"
    ),
    "promotion recorded, nothing moved": (
        "pipelines.feature_tables:atomic_write_text:1:after:snapshot.json"
    ),
    "promotion moved, manifest not saved": (
        "pipelines.feature_tables:atomic_write_text:2:before:manifest.json"
    ),
}


@pytest.mark.parametrize("point", list(PROMOTION_KILL_POINTS))
def test_build_killed_while_promoting_held_back_rows_promotes_them_once(tmp_path, inputs, point):
    c2, _, tsv = inputs
    fdir = tmp_path / "data" / "features"
    build_features(fdir, [c2], tsv, OPTS)
    flat = write_h5(
        tmp_path / "flat.h5", subjects=A, windows_per_subject=5, data=np.zeros((10, 129, 400))
    )
    assert build_features(fdir, [flat.path], tsv, OPTS).n_held_back == 2
    args = ["--input", flat.path, "--participants", tsv, "--accept-failing"]
    kill_build_at(tmp_path / "data", PROMOTION_KILL_POINTS[point], args, tmp_path)

    rerun = build_features(fdir, [flat.path], tsv, OPTS)  # without --accept-failing
    recorded = point != "promotion staged, before its record"
    assert rerun.n_held_back == (0 if recorded else 2)  # a recorded promotion is completed
    if not recorded:
        assert build_features(fdir, [flat.path], tsv, ACCEPT).n_held_back == 0
    manifest = _manifest(fdir)
    promotions = [s for s in manifest["snapshots"].values() if s["kind"] == "promotion"]
    assert len(promotions) == 1 and sorted(promotions[0]["subjects"]) == A
    assert not (fdir / ft.STAGING_NAME).exists() and _visible(fdir) == _listed(manifest)
    rows = pd.read_parquet(fdir / "subject_features" / "challenge2")
    assert (rows["snapshot_id"] == promotions[0]["snapshot_id"]).sum() == 2


# --- two builds at once -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "which", [("both", "both"), ("both", "c1 only")], ids=["same inputs", "overlapping inputs"]
)
def test_two_builds_started_together_commit_each_snapshot_once(tmp_path, inputs, reference, which):
    c2, c1, tsv = inputs
    data, go = tmp_path / "data", tmp_path / "go"
    files = {"both": [c2, c1], "c1 only": [c1]}
    procs, ready = [], []
    for i, name in enumerate(which):
        ready.append(tmp_path / f"ready-{i}")
        args = ["--input", *files[name], "--participants", tsv]
        procs.append(
            start_build(data, "none", args, EEGFS_TEST_READY=str(ready[-1]), EEGFS_TEST_GO=str(go))
        )
    for flag, proc in zip(ready, procs, strict=True):
        _wait_for(flag, proc)
    go.touch()  # released together: both ask for the build lock now
    outputs = [p.communicate(timeout=WAIT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    computed = [int(re.search(r"\((\d+) computed", o).group(1)) for o in outputs]
    assert sum(computed) == 2  # each input computed by exactly one of them
    fdir = data / "features"
    assert_store_consistent(fdir, n_snapshots=3)
    pd.testing.assert_frame_equal(_values(fdir), reference)


# --- exceptions half-way (moved from tests/features/test_features_build.py) ---------------------
def _snapshot_files(features_dir: Path, snapshot_id: str) -> list[str]:
    """Files of ``snapshot_id`` in the table directories (what directory readers see)."""
    return sorted(
        str(p.relative_to(features_dir))
        for p in features_dir.rglob(f"{snapshot_id}.parquet")
        if ft.STAGING_NAME not in p.relative_to(features_dir).parts
    )


def test_interrupted_build_resumes_without_duplicates(tmp_path, inputs, reference, monkeypatch):
    c2, c1, tsv = inputs
    fdir = tmp_path / "features"
    calls = {"n": 0}
    original = bandpower.WelchPlan.compute

    def flaky(self, x, **kw):
        calls["n"] += 1
        if calls["n"] == 5:  # c2 has 3 chunks of 4 windows: this is the 2nd chunk of c1
            raise KeyboardInterrupt("simulated Ctrl-C half-way")
        return original(self, x, **kw)

    monkeypatch.setattr(bandpower.WelchPlan, "compute", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_features(fdir, [c2, c1], tsv, OPTS)
    monkeypatch.setattr(bandpower.WelchPlan, "compute", original)
    assert len([s for s in _manifest(fdir)["snapshots"].values() if s["kind"] == "hdf5"]) == 1
    assert not list(fdir.rglob(".*.tmp"))

    rerun = build_features(fdir, [c2, c1], tsv, OPTS)
    assert [f.status for f in rerun.files] == ["skipped", "built"]
    assert_store_consistent(fdir, n_snapshots=3)
    pd.testing.assert_frame_equal(_values(fdir), reference)


def test_failure_after_some_files_are_written_leaves_nothing_visible(tmp_path, inputs, monkeypatch):
    c2, c1, tsv = inputs
    fdir = tmp_path / "features"
    build_features(fdir, [c2], tsv, OPTS)
    files_before = _visible(fdir)
    manifest_before = (fdir / "manifest.json").read_bytes()
    staged_before_failure: list[Path] = []
    original = ft.SnapshotStage.write_table

    def failing(self, table, data, challenge=None):
        if table == ft.SUBJECT_FEATURES:  # the last file of a challenge 1 snapshot
            staged_before_failure.extend(self.root.rglob("*.parquet"))
            raise OSError(28, "No space left on device (simulated)")
        return original(self, table, data, challenge)

    monkeypatch.setattr(ft.SnapshotStage, "write_table", failing)
    with pytest.raises(OSError, match="simulated"):
        build_features(fdir, [c2, c1], tsv, OPTS)
    monkeypatch.undo()
    # window features, window labels and response-time labels had been written...
    assert {p.parent.parent.name for p in staged_before_failure} == {
        ft.WINDOW_FEATURES,
        ft.WINDOW_LABELS,
        ft.SUBJECT_RT_LABELS,
    }
    # ...yet no table directory shows a new file, nothing is left staged, the manifest is as it was
    assert _visible(fdir) == files_before
    assert not (fdir / ft.STAGING_NAME).exists() and not list(fdir.rglob(".*.tmp"))
    assert (fdir / "manifest.json").read_bytes() == manifest_before

    rerun = build_features(fdir, [c2, c1], tsv, OPTS)
    assert [f.status for f in rerun.files] == ["skipped", "built"]
    man = assert_store_consistent(fdir, n_snapshots=3)
    sid = rerun.files[1].snapshot_id
    assert _snapshot_files(fdir, sid) == sorted(man["snapshots"][sid]["files"].values())
    assert len(man["snapshots"][sid]["files"]) == 4


def test_staged_files_without_commit_record_are_deleted_and_rebuilt(tmp_path, inputs):
    c2, _, tsv = inputs
    fdir = tmp_path / "features"
    first = build_features(fdir, [c2], tsv, OPTS)
    sid = first.files[0].snapshot_id
    # what a build killed before its commit record leaves: staged files only
    orphan = (
        fdir / ft.STAGING_NAME / "challenge2_0000000000000000" / "window_features" / "challenge2"
    )
    orphan.mkdir(parents=True)
    (orphan / "challenge2_0000000000000000.parquet").write_bytes(b"PAR1 half written")
    again = build_features(fdir, [c2], tsv, OPTS)
    assert again.files[0].status == "skipped" and again.files[0].snapshot_id == sid
    assert not (fdir / ft.STAGING_NAME).exists()
    assert len(_manifest(fdir)["snapshots"]) == 2
