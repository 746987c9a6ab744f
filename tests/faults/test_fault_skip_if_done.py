"""Two ``eegfs train --skip-if-done`` processes started at once train the run once.

Promise (README "Reliability", docs/training.md "Train once: --skip-if-done"): of two
``eegfs train --skip-if-done`` processes started at the same moment with the same
configuration, code commit and data, exactly one trains and records the run; the other exits 0
without training and names that run (being trained right now, or completed). The claim is one
MongoDB document under a unique key, so this holds across processes and machines, with no lock
held in any one process. The processes run in a fresh git repository with one commit, so the
code identity does not depend on the state of this checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tracking import Tracker

REPO = Path(__file__).resolve().parents[2]


def test_two_skip_if_done_trainings_started_at_once_train_once(
    settings, cli_env, small_demo, tmp_path, clean_repo_at
):
    files = [str(p) for p in sorted(small_demo.challenge2.values())]
    command = [sys.executable, "-m", "eegfs", "train", "--challenge", "2", "--data", *files]
    command += ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--features", "none"]
    command += ["--no-progress", "--skip-if-done"]
    env = {**os.environ, **cli_env, "PYTHONPATH": str(REPO)}
    cwd = clean_repo_at(tmp_path / "repo")
    processes = [
        subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    with Tracker(settings) as tracker:
        runs = tracker.search_runs()
    assert len(runs) == 1, outputs
    run_id = str(runs[0]["_id"])
    assert runs[0]["status"] == "completed"
    trained = [o for o in outputs if re.search(rf"^experiment\s+{run_id}$", o, re.M)]
    deferred = [
        o
        for o in outputs
        if re.search(rf"an identical run is (already recorded|being trained).*{run_id}", o)
    ]
    assert len(trained) == 1 and len(deferred) == 1, outputs
    assert trained[0] is not deferred[0]
