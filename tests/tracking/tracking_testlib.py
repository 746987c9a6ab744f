"""Helpers of the tracking tests (their fixtures live in conftest.py next to this file)."""

from __future__ import annotations

from pathlib import Path

from tracking import Tracker

# A copy of ../shared/fixtures/eeg2025_metadata.db (a real EEG2025 run log, 72 KB), kept in the
# repository so the tests run from any clone.
SHARED_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def start_example_run(tracker: Tracker, name: str = "eegnex-test", challenge: int = 2, **kwargs):
    """A run with typical EEG2025 arguments (code given, so no git call)."""
    args = {
        "model": {"name": "EEGNeX", "architecture": "EEGNeX", "parameters": 62_000},
        "config": {"batch_size": 64, "learning_rate": 0.002, "optimizer": "Adamax"},
        "data": {
            "files": ["challenge2_R1.h5"],
            "releases": ["R1"],
            "splits": {"train": {"windows": 600, "subjects": 10}},
        },
        "features": {"feature_service": "eeg_inputs_v1", "snapshot_id": "abc123"},
        "code": {"commit": "0" * 40, "dirty": False},
    }
    args.update(kwargs)
    return tracker.start_run(name, challenge, **args)


def concurrent_writer(settings, shared_id: str, index: int, epochs: int, steps: int) -> str:
    """Body of one writer process of the concurrency test (module level so spawn can import it).

    Logs a run of its own (epochs, step metrics, checkpoints) and, at the same time as the
    other processes, epochs and best checkpoints of one shared run.
    """
    import tempfile

    with Tracker(settings) as tracker:
        own = start_example_run(tracker, name=f"writer-{index}")
        shared = tracker.resume_run(shared_id)
        tmp = Path(tempfile.mkdtemp(prefix=f"writer{index}-"))
        for epoch in range(epochs):
            for i in range(steps):
                own.log_metrics(
                    {"loss": float(index * 1e6 + epoch * steps + i)}, step=epoch * steps + i
                )
            own.log_epoch(epoch, {"val_loss": float(index) + epoch / 100})
            shared.log_epoch(index * epochs + epoch, {"writer": float(index)})
            shared.log_epoch(0, {"writer": float(index)})  # every process writes epoch 0
        path = tmp / "best.pt"
        path.write_bytes(f"writer {index}".encode())
        own.log_checkpoint(path, epoch=epochs - 1, metrics={"val_loss": float(index)}, is_best=True)
        shared.log_checkpoint(path, epoch=index, metrics={"val_loss": float(index)}, is_best=True)
        own.finish()
        return str(own.id)
