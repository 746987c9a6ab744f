"""``eegfs predict``: a registered model's predictions for one HDF5 file, per window and subject.

:func:`predict_file` runs the steps, each in its own module:

1. :mod:`training.predict_model`: resolve ``NAME[@ALIAS|:VERSION]``, load the checkpoint
   (sha256 verified, ``weights_only=True``) and rebuild the model from its run's config;
2. index the file (:func:`training.index.build_index`, unlabelled windows kept) and refuse it
   when its channels, window length or rate differ from the training windows;
3. :mod:`training.predict_features`: the subject features (recorded snapshot, online store, or
   the file pushed first), source recorded per subject;
4. the evaluation pass of training (:func:`training.loop.predict`: the same dataset, centre
   crop, channel statistics, feature scaler and target scale) under ``torch.inference_mode``;
5. :mod:`training.predict_output`: the window and subject Parquet files;
6. :mod:`tracking.predictions`: the ``predictions`` document in MongoDB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from training import predict_output as po
from training.metrics import nrmse, subject_nrmse
from training.predict_features import SubjectFeatures, gather_features
from training.predict_model import (
    InputShape,
    RegisteredModel,
    check_input_shape,
    load_registered_model,
)

#: Windows per inference batch (evaluation needs no gradients: large batches are cheap).
DEFAULT_BATCH_SIZE = 256


@dataclass
class PredictionResult:
    """What :func:`predict_file` did (also stored as the ``predictions`` document)."""

    prediction_id: str
    model: str
    version: int
    data: Path
    out: Path
    subjects_out: Path
    n_windows: int
    n_subjects: int
    sources: dict[str, int]
    metrics: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def windows_per_s(self) -> float:
        return self.n_windows / max(self.timing.get("total_s", 0.0), 1e-9)


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"{name}_s"] = now - self.last
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.laps, "total_s": time.perf_counter() - self.start}


def input_sha256(settings, path: str | Path) -> str:
    """The file's sha256, from the feature build's hash cache (keyed by the path as given to
    build or push) when its size and mtime are unchanged; else read and hashed."""
    from pipelines import feature_tables as ft
    from pipelines.build_snapshot import cached_sha256
    from services.files import sha256_file

    manifest = ft.Manifest.load(settings.features_dir)
    for candidate in dict.fromkeys([Path(path), Path(path).resolve()]):
        cached = cached_sha256(manifest, candidate)
        if cached is not None:
            return cached
    return sha256_file(path)


def index_file(model: RegisteredModel, path: Path):
    """The file's window index (every window kept), refused when its shape is not the model's."""
    from training.index import build_index

    index = build_index(
        [str(path)],
        target=model.config.target,
        layout=model.challenge.default_layout,
        keep_unlabelled=True,
    )
    info = index.files[0]
    check_input_shape(model, path, InputShape(info.n_channels, info.n_times, info.sfreq))
    return index


def run_inference(
    model: RegisteredModel,
    index,
    features: SubjectFeatures | None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, predictions) in index order: training's evaluation pass over every window."""
    from training.data import WindowDataset
    from training.features import BatchCollate
    from training.loop import predict
    from training.prepare import make_loader

    ckpt = model.checkpoint
    dataset = WindowDataset(
        index, crop_samples=model.crop_samples, random_crop=False, stats=ckpt.channel_stats
    )
    policy = model.config.missing_features
    collate = (
        BatchCollate(policy=policy)
        if features is None
        else BatchCollate(features.source, ckpt.feature_scaler, policy=policy)
    )
    loader = make_loader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        seed=0,
        workers=workers,
        collate=collate,
        device=model.device,
    )
    try:
        with torch.inference_mode():
            y_true, y_pred, _, _ = predict(model.model, loader, model.device, ckpt.target_scale)
    finally:
        dataset.close()
    return y_true, y_pred


def _metrics(subjects: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    labelled = ~np.isnan(y_true)
    if labelled.sum() < 2:
        return {}
    t, p, s = y_true[labelled], y_pred[labelled], subjects[labelled]
    return {"nrmse": nrmse(t, p), "subject_nrmse": subject_nrmse(t, p, s)}


def predict_file(
    settings,
    model_spec: str,
    data: str | Path,
    *,
    out: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    push: bool = True,
    echo: Callable[[str], None] | None = None,
) -> PredictionResult:
    """Predict every window of ``data`` with registered model ``model_spec``; see the module.

    Raises
    ------
    PredictError
        The file's shape differs from the training windows (both named), or the model's
        record is incomplete.
    NotFoundError, ChecksumMismatchError, CheckpointError, DataError, FeatureError
        No such model/alias/version, a modified file, an unreadable input or feature store.
    """
    say = echo or (lambda text: None)
    clock = _Clock()
    path = Path(data).resolve()
    model = load_registered_model(settings, model_spec, device=device)
    clock.lap("load")
    index = index_file(model, path)
    clock.lap("index")
    # hashed beside the features and inference (hashlib releases the GIL), unless cached
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool:
        sha_future = pool.submit(input_sha256, settings, data)
        subjects = sorted(set(index.subjects.tolist()))
        features = None
        if model.features.service is not None:
            features = gather_features(
                settings, model.features, subjects, path, push=push, echo=say
            )
        clock.lap("features")
        y_true, y_pred = run_inference(
            model, index, features, batch_size=batch_size, workers=workers
        )
        clock.lap("inference")
        sha = sha_future.result()
        clock.lap("hash_wait")
    has_target = bool(index.files[0].target_name)
    targets = y_true if has_target else None
    sources = {} if features is None else features.sources
    out = (
        Path(out)
        if out is not None
        else po.default_out(settings.data_dir, path, model.name, model.version)
    )
    sub_out = po.subjects_path(out)
    po.write_table(po.window_table(index.subjects, index.rows, y_pred, targets), out)
    po.write_table(po.subject_table(index.subjects, y_pred, targets, sources), sub_out)
    clock.lap("write")
    metrics = _metrics(index.subjects, y_true, y_pred) if has_target else {}
    counts = {"snapshot": 0, "online": 0, "pushed": 0, "missing": 0}
    if features is not None:
        counts = features.counts()
    result = PredictionResult(
        "",
        model.name,
        model.version,
        path,
        out,
        sub_out,
        len(index),
        len(subjects),
        counts,
        metrics,
    )
    result.timing = clock.total()
    result.prediction_id = str(_record(settings, model, result, sha, index, features))
    return result


def _record(settings, model, result, sha, index, features):
    from tracking.predictions import record_prediction

    lineage = model.features
    return record_prediction(
        settings,
        {
            "model": {
                "name": model.name,
                "version": model.version,
                "sha256": model.version_doc.get("sha256"),
                "experiment_id": (model.version_doc.get("lineage") or {}).get("experiment_id"),
            },
            "feature_service": lineage.service,
            "snapshot_id": lineage.snapshot_id,
            "snapshot_ids": lineage.snapshot_ids,
            "pushed_snapshot_ids": [] if features is None else features.pushed_snapshot_ids,
            "input": {
                "path": str(result.data),
                "sha256": sha,
                "size_bytes": result.data.stat().st_size,
            },
            "counts": {
                "windows": result.n_windows,
                "subjects": result.n_subjects,
                "labelled_windows": int((~np.isnan(index.targets)).sum()),
                "sources": result.sources,
            },
            "subject_sources": {} if features is None else features.sources,
            "metrics": result.metrics,
            "timing": result.timing,
            "out": {"windows": str(result.out), "subjects": str(result.subjects_out)},
        },
    )


def format_prediction(result: PredictionResult) -> str:
    """What ``eegfs predict`` prints."""
    src = ", ".join(f"{k} {v}" for k, v in result.sources.items() if v) or "no features"
    lines = [
        f"model           {result.model} v{result.version}",
        f"input           {result.data}",
        f"windows         {result.n_windows} ({result.n_subjects} subjects; features: {src})",
        f"predictions     {result.out}",
        f"subjects        {result.subjects_out}",
    ]
    if result.metrics:
        lines.append(
            f"NRMSE           {result.metrics['subject_nrmse']:.4f} subject-level, "
            f"{result.metrics['nrmse']:.4f} window-level (the file has targets)"
        )
    lines.append(
        f"took            {result.timing['total_s']:.2f} s ({result.windows_per_s:,.0f} windows/s)"
    )
    lines.append(f"recorded        predictions {result.prediction_id}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PredictionResult",
    "format_prediction",
    "index_file",
    "input_sha256",
    "predict_file",
    "run_inference",
]
