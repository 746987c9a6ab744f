"""``eegfs runs reproduce``: rebuild a recorded run from its record alone and compare.

:func:`reproduce` reads the run's stored configuration and seed, verifies the offline feature
snapshots it read (by their recorded ids, against the sha256 of each file that the manifest
recorded at build time), trains again with the current code on those snapshots (read offline,
as of the latest of them, with deterministic algorithms) and compares every recorded epoch
metric with the original's. The outcome is pushed onto the original run's ``reproductions``;
the reproduction itself is a new run (it never claims, see :mod:`training.claiming`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.errors import ReproduceError


@dataclass
class Reproduction:
    """What :func:`reproduce` found (also stored in the original run's ``reproductions``)."""

    original_id: str
    reproduction_id: str
    code_matches: bool
    code_note: str
    snapshots: dict
    epochs_compared: int
    identical: bool
    max_abs_diff: float
    first_diff_epoch: int | None
    first_diff_metric: str | None
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The document pushed onto the original run."""
        out = dataclasses.asdict(self)
        out.pop("original_id")
        if not math.isfinite(out["max_abs_diff"]):
            out["max_abs_diff"] = None  # a metric missing on one side
        return out


def reproduce(
    settings,
    experiment_id: str,
    *,
    epochs: int | None = None,
    allow_modified: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    code: Mapping | None = None,
) -> Reproduction:
    """Train run ``experiment_id`` again from its record and compare its epoch metrics.

    Parameters
    ----------
    epochs : int, optional
        Train and compare only this many epochs (default: all the run recorded).
    allow_modified : bool
        Go on when a snapshot file's checksum differs from the manifest's (or the offline
        store holds snapshots the run did not read); the difference is then reported.
    code : mapping, optional
        ``{"commit", "dirty"}`` of the current code (default: detected in the working directory).

    Raises
    ------
    ReproduceError
        Not an ``eegfs train`` run, a snapshot missing or modified (without
        ``allow_modified``), or ``epochs`` beyond what the run recorded.
    """
    from tracking import Tracker
    from tracking.gitinfo import detect_git
    from training.runner import train

    echo = echo or (lambda text: None)
    code = detect_git() if code is None else dict(code)
    with Tracker(settings) as tracker:
        doc = tracker.get_run(experiment_id)
        original = _epoch_metrics(tracker.run_history(doc["_id"])["epochs"])
    config = _recorded_config(doc, epochs, len(original))
    code_matches, code_note = _code_check(doc.get("code") or {}, code)
    echo(code_note)
    config, snapshots = _offline_features(settings, doc.get("features") or {}, config)
    notes = [f"snapshot file fails its checksum: {f}" for f in snapshots["modified"]]
    notes += [f"offline snapshot the run did not read: {s}" for s in snapshots["extra"]]
    if notes and not allow_modified:
        raise ReproduceError(
            f"cannot reproduce experiment {doc['_id']}: its features differ from what it read "
            f"({'; '.join(notes)}); pass --allow-modified to train anyway and see the difference"
        )
    for note in notes:
        echo(f"warning: {note}")
    with _deterministic():
        result = train(settings, config, progress=progress, echo=echo, code=code)
    with Tracker(settings) as tracker:
        again = _epoch_metrics(tracker.run_history(result.experiment_id)["epochs"])
        diff = compare_epochs({e: m for e, m in original.items() if e < config.epochs}, again)
        out = Reproduction(
            str(doc["_id"]),
            result.experiment_id,
            code_matches,
            code_note,
            snapshots,
            len(again),
            **diff,
            notes=notes,
        )
        tracker.record_reproduction(doc["_id"], out.record())
        tracker.flush()
    return out


def _recorded_config(doc: dict, epochs: int | None, recorded: int) -> TrainConfig:
    stored = (doc.get("config") or {}).get("train")
    if not stored:
        raise ReproduceError(
            f"experiment {doc['_id']} was not started by eegfs train (no config.train); there is "
            "nothing to rebuild it from"
        )
    config = TrainConfig.from_dict(stored)
    wanted = recorded if epochs is None else epochs
    if wanted < 1 or wanted > recorded:
        raise ReproduceError(
            f"--epochs {wanted}: experiment {doc['_id']} recorded {recorded} epoch(s); give 1 to "
            f"{recorded}"
        )
    name = f"reproduce-{doc['_id']}"
    tags = (*config.tags, "reproduction")
    return dataclasses.replace(config, epochs=wanted, name=name, tags=tags)


def _code_check(recorded: Mapping, current: Mapping) -> tuple[bool, str]:
    then, now = recorded.get("commit"), current.get("commit")
    if then is None:
        return False, "the run recorded no code commit: the current code is used"
    if now != then:
        return False, (
            f"the code is at {str(now)[:12]}, the run was trained at {then[:12]}: the current "
            "code is used"
        )
    if current.get("dirty") or recorded.get("dirty"):
        return False, f"the tree at {then[:12]} has uncommitted changes: the current code is used"
    return True, f"the code is at the run's commit {then[:12]}"


def _offline_features(settings, record: Mapping, config: TrainConfig) -> tuple[TrainConfig, dict]:
    """The config reading the run's snapshots offline, and what the verification found."""
    from pipelines import feature_tables as ft

    if config.features == "none":
        return config, {"ids": [], "modified": [], "extra": [], "as_of": None}
    ids = record.get("snapshot_ids")
    if not ids:
        raise ReproduceError(
            f"the run recorded no offline snapshot ids of its features "
            f"({record.get('snapshot_id')}); it cannot be rebuilt from the offline store"
        )
    manifest = ft.Manifest.load(settings.features_dir)
    missing = sorted(set(ids) - set(manifest.snapshots))
    if missing:
        raise ReproduceError(
            f"snapshot(s) {missing} of the run are not in the offline store "
            f"{settings.features_dir}; restore them (or point EEGFS_DATA_DIR at their store)"
        )
    stamps = [datetime.fromisoformat(manifest.snapshots[s]["event_timestamp"]) for s in ids]
    as_of = config.as_of or max(stamps).isoformat()
    when = datetime.fromisoformat(as_of)
    extra = sorted(
        sid
        for sid, snap in manifest.snapshots.items()
        if sid not in ids and datetime.fromisoformat(snap["event_timestamp"]) <= when
    )
    modified = _changed_files(Path(settings.features_dir), [manifest.snapshots[s] for s in ids])
    found = {"ids": sorted(ids), "modified": modified, "extra": extra, "as_of": as_of}
    return dataclasses.replace(config, features="historical", as_of=as_of), found


def _changed_files(features_dir: Path, entries: list[dict]) -> list[str]:
    """Files of ``entries`` whose sha256 differs from the recorded one (or has none recorded)."""
    from services.files import sha256_file

    changed = []
    for entry in entries:
        sums = entry.get("sha256") or {}
        for table, rel in sorted(entry.get("files", {}).items()):
            path = features_dir / rel
            if not path.exists():
                raise ReproduceError(f"{path}: snapshot {entry['snapshot_id']}'s file is missing")
            expected = sums.get(table)
            if expected is None:
                changed.append(f"{rel} (no checksum recorded)")
            elif sha256_file(path) != expected:
                changed.append(rel)
    return changed


#: Epoch metrics that measure the machine, not the model (timings, cache use): not compared.
MACHINE_METRICS = frozenset(
    {"duration_s", "train_s", "batches_per_s", "feature_lookup_ms", "feature_cache_hit_rate"}
)


def _epoch_metrics(epochs: list[dict]) -> dict[int, dict[str, float]]:
    """Recorded epoch metrics by epoch, less :data:`MACHINE_METRICS`."""
    return {
        int(e["epoch"]): {
            k: v for k, v in (e.get("metrics") or {}).items() if k not in MACHINE_METRICS
        }
        for e in epochs
    }


def compare_epochs(
    original: Mapping[int, Mapping[str, float]], again: Mapping[int, Mapping[str, float]]
) -> dict[str, Any]:
    """``identical``, ``max_abs_diff`` and the first epoch (and metric) where they differ.

    Every metric of every epoch of ``original`` is compared; one missing on either side is an
    infinite difference.
    """
    largest, first = 0.0, (None, None)
    for epoch in sorted(set(original) | set(again)):
        a, b = original.get(epoch, {}), again.get(epoch, {})
        for name in sorted(set(a) | set(b)):
            d = _difference(a.get(name), b.get(name))
            if d != 0 and first[0] is None:
                first = (epoch, name)
            largest = max(largest, d)
    return {
        "identical": first[0] is None,
        "max_abs_diff": largest,
        "first_diff_epoch": first[0],
        "first_diff_metric": first[1],
    }


def _difference(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(float(a) - float(b)) if not (math.isnan(a) or math.isnan(b)) else math.inf


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def format_reproduction(rep: Reproduction) -> str:
    """What ``eegfs runs reproduce`` prints."""
    if rep.identical:
        verdict = f"identical: every metric of {rep.epochs_compared} epoch(s) is equal"
    else:
        verdict = (
            f"DIFFERENT: largest difference {rep.max_abs_diff:.6g}, first at epoch "
            f"{rep.first_diff_epoch} ({rep.first_diff_metric})"
        )
    snaps = rep.snapshots
    lines = [
        f"original        {rep.original_id}",
        f"reproduction    {rep.reproduction_id}",
        f"code            {rep.code_note}",
        f"features        {len(snaps['ids'])} offline snapshot(s) as of {snaps['as_of']}, "
        + ("checksums verified" if not rep.notes else f"{len(rep.notes)} difference(s)"),
        f"metrics         {verdict}",
        f"details         eegfs runs show {rep.original_id}",
    ]
    return "\n".join(lines)


__all__ = ["MACHINE_METRICS", "Reproduction", "compare_epochs", "format_reproduction", "reproduce"]
