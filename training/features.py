"""Subject features for training, from the feature store of :mod:`featurestore`.

Three modes:

* ``online``: one lookup per batch for the batch's unique subjects, from Redis through
  :class:`featurestore.client.FeatureStoreClient` and its in-process cache (dropped by the
  client when a newer materialization is seen). The lookup runs in the collate function, i.e. in
  the DataLoader worker processes, so it overlaps the training step instead of stalling it; each
  worker opens its own client lazily (nothing unpicklable travels to the workers).
* ``historical``: for exact reproducibility, one point-in-time frame of every subject as of a
  given time (``--as-of``, default: the start of the run), read once from the offline store and
  served from memory. Its content hash is recorded with the run.
* ``none``: the model sees only the EEG.

Only input feature services (``INPUT_SERVICES``) are accepted, and every column is checked
against the label names (``LABEL_FEATURES``): a label never reaches the model inputs.

Missing features, policy ``impute`` (default): a missing value is replaced by the training mean
(0 after standardisation) and the model gets a 0/1 availability mask beside the values, so
"missing" and "average" stay distinguishable; a subject the store does not know at all gets an
all-zero mask. Policy ``fail``: a subject the store does not know (every selected column
missing) or a failed lookup stops the run with a :class:`FeatureError` naming the subjects;
values that are missing for a known subject (``n/a`` in participants.tsv, the flat reference
channel) are still imputed and masked.

Columns: ``summary`` (default) keeps the scalar features (band-power aggregates, spectral
entropy, age, sex code, handedness); ``all`` adds the per-channel relative band powers
(``chan_rel_<band>[<channel>]``, 5 x 129 columns), which on small data mostly invite overfitting.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import torch

from training.errors import FeatureError
from training.loader import StackedSamples

logger = logging.getLogger(__name__)

FEATURE_MODES = ("online", "historical", "none")
FEATURE_POLICIES = ("impute", "fail")
FEATURE_SETS = ("summary", "all")
#: Standard deviations below this are treated as 1 (constant columns are only centred).
MIN_FEATURE_STD = 1e-6


def base_feature_name(column: str) -> str:
    """``chan_rel_alpha`` for ``chan_rel_alpha[E1]``, ``sex`` for ``sex_code``, else the name."""
    name = column.split("[", 1)[0]
    return name[: -len("_code")] if name.endswith("_code") else name


def check_no_labels(columns: Sequence[str], service: str) -> None:
    """Raise :class:`FeatureError` when ``service`` is not an input service or a column is a label."""
    from featurestore.labels import INPUT_SERVICES, LABEL_FEATURES

    if service not in INPUT_SERVICES.values():
        raise FeatureError(
            f"feature service {service!r} is not an input service; training only reads "
            f"{sorted(INPUT_SERVICES.values())} (labels must never reach the model)"
        )
    leaked = sorted({c for c in columns if base_feature_name(c) in LABEL_FEATURES})
    if leaked:
        raise FeatureError(
            f"feature service {service!r} returns label column(s) {leaked}; labels must never be "
            "model inputs. Fix the service in feature_repo/ and rerun `eegfs features apply`"
        )


def select_columns(columns: Sequence[str], feature_set: str) -> list[int]:
    """Indices of ``columns`` kept by ``feature_set`` (``summary`` or ``all``)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature set must be one of {FEATURE_SETS}, got {feature_set!r}")
    if feature_set == "all":
        return list(range(len(columns)))
    return [i for i, c in enumerate(columns) if "[" not in c]


class FeatureSource(Protocol):
    """What the collate step needs from a source of subject features."""

    kind: str
    service: str
    columns: list[str]

    def lookup(self, subject_ids: Sequence[str]) -> np.ndarray:
        """Float32 (len(subject_ids), len(columns)), NaN where missing."""
        ...

    def stats(self) -> dict:
        """Counters of this process (cache hits/misses for online sources)."""
        ...


class OnlineFeatureSource:
    """Per-batch lookups in the online store; picklable, one client per process.

    Parameters
    ----------
    settings : Settings
    service : str
        An input feature service.
    all_columns : list of str
        Matrix columns of the service at the start of the run (``client.matrix_columns``).
    column_idx : list of int
        Which of them the model uses.
    cache_size : int
        Rows of the client's in-process cache (0 disables it).
    """

    kind = "online"

    def __init__(
        self,
        settings,
        service: str,
        all_columns: Sequence[str],
        column_idx: Sequence[int],
        *,
        cache_size: int = 4096,
    ) -> None:
        self.settings = settings
        self.service = service
        self.all_columns = list(all_columns)
        self.column_idx = np.asarray(column_idx, dtype=np.int64)
        self.columns = [self.all_columns[i] for i in self.column_idx]
        self.cache_size = cache_size
        self._client = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_pid"] = None
        return state

    def client(self):
        """This process's :class:`FeatureStoreClient` (a forked worker opens its own)."""
        from featurestore.client import FeatureStoreClient

        if self._client is None or self._pid != os.getpid():
            self._client = FeatureStoreClient(self.settings, cache_size=self.cache_size)
            self._pid = os.getpid()
        return self._client

    def lookup(self, subject_ids: Sequence[str]) -> np.ndarray:
        matrix, names = self.client().get_online_matrix(list(subject_ids), self.service)
        if list(names) != self.all_columns:
            raise FeatureError(
                f"feature service {self.service!r} changed its columns during the run "
                f"({len(self.all_columns)} -> {len(names)}); restart the run after "
                "`eegfs features apply`"
            )
        return np.asarray(matrix, dtype=np.float32)[:, self.column_idx]

    def stats(self) -> dict:
        if self._client is None or self._pid != os.getpid():
            return {}
        info = self._client.cache_info()
        return {"hits": int(info["hits"]), "misses": int(info["misses"])}

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None


class TableFeatureSource:
    """Features held in memory (a historical frame, or preloaded online values); picklable."""

    def __init__(
        self,
        kind: str,
        service: str,
        columns: Sequence[str],
        subjects: Sequence[str],
        matrix: np.ndarray,
    ) -> None:
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.shape != (len(subjects), len(columns)):
            raise ValueError(
                f"feature table has shape {matrix.shape}, expected ({len(subjects)}, {len(columns)})"
            )
        self.kind = kind
        self.service = service
        self.columns = list(columns)
        self.subjects = [str(s) for s in subjects]
        self.matrix = matrix
        self._row = {s: i for i, s in enumerate(self.subjects)}

    def lookup(self, subject_ids: Sequence[str]) -> np.ndarray:
        out = np.full((len(subject_ids), len(self.columns)), np.nan, dtype=np.float32)
        for i, s in enumerate(subject_ids):
            j = self._row.get(str(s))
            if j is not None:
                out[i] = self.matrix[j]
        return out

    def stats(self) -> dict:
        return {}

    def sha256(self) -> str:
        """Content hash of the table (subjects, columns and values), for reproducibility."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.subjects).encode())
        h.update(b"\x1e")
        h.update("\x1f".join(self.columns).encode())
        h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.matrix).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class FeatureScaler:
    """Standardisation of the feature columns, from training subjects only.

    ``transform`` returns (values, mask): values z-scored with NaN replaced by 0 (the training
    mean), mask 1.0 where a value was present, both float32 (n, d).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, matrix: np.ndarray) -> FeatureScaler:
        """From a (n_train_subjects, d) matrix with NaN for missing values."""
        m = np.asarray(matrix, dtype=np.float64)
        present = ~np.isnan(m)
        count = present.sum(axis=0)
        total = np.where(present, m, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros(m.shape[1]), where=count > 0)
        sq = np.where(present, np.square(m - mean), 0.0).sum(axis=0)
        std = np.sqrt(np.divide(sq, count, out=np.zeros(m.shape[1]), where=count > 0))
        std = np.where(std < MIN_FEATURE_STD, 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = np.asarray(matrix, dtype=np.float32)
        mask = ~np.isnan(m)
        values = np.where(mask, (m - self.mean) / self.std, 0.0).astype(np.float32)
        return values, mask.astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.astype(float).tolist(), "std": self.std.astype(float).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureScaler:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def _stack(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack equal-shape arrays into one float32 tensor."""
    return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))


class BatchCollate:
    """Collate ``(x, y, subject, position)`` samples into a batch dict, adding subject features.

    Runs in the DataLoader workers. Keys: ``x`` float32 (B, C, T), ``y`` float32 (B,),
    ``subjects`` list of str, ``positions`` int64 (B,), and with a source ``features`` float32
    (B, 2 * d) = [standardised values, availability mask] plus ``lookup``: a dict with
    ``seconds``, ``subjects`` (unique in the batch), ``missing_subjects``, ``failed`` (0/1),
    ``worker``, ``pid`` and the source's cumulative ``stats`` in this process.
    """

    def __init__(
        self,
        source: FeatureSource | None = None,
        scaler: FeatureScaler | None = None,
        *,
        policy: str = "impute",
    ) -> None:
        if policy not in FEATURE_POLICIES:
            raise ValueError(
                f"missing-feature policy must be one of {FEATURE_POLICIES}, got {policy!r}"
            )
        if source is not None and scaler is None:
            raise ValueError("a feature source needs a FeatureScaler fitted on training subjects")
        self.source = source
        self.scaler = scaler
        self.policy = policy

    def __call__(self, samples: list[tuple]) -> dict:
        xs, ys, subjects, positions = zip(*samples, strict=True)
        if isinstance(samples, StackedSamples):  # already collated by WindowDataset.__getitems__
            batch = {
                "x": samples.x,
                "y": samples.y,
                "subjects": list(subjects),
                "positions": samples.positions,
            }
        else:
            batch = {
                "x": _stack(xs),
                "y": torch.tensor(ys, dtype=torch.float32),
                "subjects": list(subjects),
                "positions": torch.tensor(positions, dtype=torch.int64),
            }
        if self.source is not None:
            batch["features"], batch["lookup"] = self._features(list(subjects))
        return batch

    def _features(self, subjects: list[str]) -> tuple[torch.Tensor, dict]:
        from pipelines.errors import PipelineError

        unique = list(dict.fromkeys(subjects))
        start = time.perf_counter()
        failed = 0
        try:
            matrix = self.source.lookup(unique)
        except PipelineError as exc:
            if self.policy == "fail":
                raise FeatureError(
                    f"feature lookup in {self.source.service!r} failed for subjects {unique}: {exc}"
                ) from exc
            logger.warning("feature lookup failed (%s); this batch's features are imputed", exc)
            matrix = np.full((len(unique), len(self.source.columns)), np.nan, np.float32)
            failed = 1
        seconds = time.perf_counter() - start
        unknown = [s for s, row in zip(unique, matrix, strict=True) if np.isnan(row).all()]
        if unknown and self.policy == "fail":
            raise FeatureError(
                f"no features in {self.source.service!r} ({self.source.kind}) for subject(s) "
                f"{unknown}; build and materialize them (`eegfs features build/apply/materialize`) "
                "or train with --missing-features impute"
            )
        values, mask = self.scaler.transform(matrix)
        table = np.concatenate([values, mask], axis=1)
        row_of = {s: i for i, s in enumerate(unique)}
        feats = torch.from_numpy(table[[row_of[s] for s in subjects]])
        info = torch.utils.data.get_worker_info()
        lookup = {
            "seconds": seconds,
            "subjects": len(unique),
            "missing_subjects": len(unknown),
            "failed": failed,
            "worker": -1 if info is None else info.id,
            "pid": os.getpid(),
            "stats": self.source.stats(),
        }
        return feats, lookup


# --- building sources (main process) ------------------------------------------------------------
@dataclass
class FeatureSetup:
    """A feature source, its scaler and what the run records about it."""

    source: FeatureSource
    scaler: FeatureScaler
    record: dict


def _snapshots_as_of(settings, when: datetime) -> list[str]:
    """Offline snapshot ids whose ``event_timestamp`` is at or before ``when`` (manifest order)."""
    from pipelines import feature_tables as ft

    manifest = ft.Manifest.load(settings.features_dir)
    return sorted(
        sid
        for sid, snap in manifest.snapshots.items()
        if datetime.fromisoformat(snap["event_timestamp"]) <= when
    )


def _client(settings, cache_size: int):
    from featurestore.client import FeatureStoreClient

    return FeatureStoreClient(settings, cache_size=cache_size)


def setup_features(
    settings,
    *,
    mode: str,
    challenge: int,
    train_subjects: Sequence[str],
    all_subjects: Sequence[str],
    feature_set: str = "summary",
    as_of: datetime | None = None,
    cache_size: int = 4096,
) -> FeatureSetup | None:
    """Prepare the feature source of a run (``None`` for mode ``none``).

    The scaler is fitted on ``train_subjects`` only. For ``historical`` the frame of every subject
    in ``all_subjects`` is read once, as of ``as_of`` (default now).

    Raises
    ------
    FeatureError
        Unknown mode, nothing materialized (online), a label column, or no training subject
        with features.
    """
    from featurestore.labels import INPUT_SERVICES
    from pipelines.errors import PipelineError
    from services.connections import mask_uri

    if mode not in FEATURE_MODES:
        raise FeatureError(f"feature mode must be one of {FEATURE_MODES}, got {mode!r}")
    if mode == "none":
        return None
    service = INPUT_SERVICES[int(challenge)]
    try:
        with _client(settings, cache_size=0) as client:
            all_columns = client.matrix_columns(service)
            check_no_labels(all_columns, service)
            idx = select_columns(all_columns, feature_set)
            if not idx:
                raise FeatureError(f"feature set {feature_set!r} keeps no column of {service!r}")
            record = {
                "service": service,
                "mode": mode,
                "feature_set": feature_set,
                "n_columns": len(idx),
                "columns": [all_columns[i] for i in idx],
            }
            if mode == "online":
                served = client.served_snapshot_id()
                if served is None:
                    raise FeatureError(
                        f"the online store at {mask_uri(settings.redis_url)} serves no "
                        "materialization; run `eegfs features build`, `apply` and `materialize`, "
                        "or train with --features historical / none"
                    )
                train_matrix, _ = client.get_online_matrix(list(train_subjects), service)
                record["snapshot_id"] = served
                record["snapshot_ids"] = client.served_snapshot_ids()
                source: FeatureSource = OnlineFeatureSource(
                    settings, service, all_columns, idx, cache_size=cache_size
                )
                train_matrix = np.asarray(train_matrix, np.float32)[:, idx]
            else:
                import pandas as pd

                when = (as_of or datetime.now(UTC)).astimezone(UTC)
                subjects = sorted(set(all_subjects))
                entity_df = pd.DataFrame(
                    {"subject_id": subjects, "event_timestamp": [when] * len(subjects)}
                )
                matrix, _ = client.get_historical_matrix(entity_df, service)
                table = TableFeatureSource(
                    "historical",
                    service,
                    record["columns"],
                    subjects,
                    np.asarray(matrix, np.float32)[:, idx],
                )
                digest = table.sha256()
                record.update(
                    as_of=when.isoformat(),
                    frame_sha256=digest,
                    snapshot_id=f"hist_{digest[:16]}",
                    snapshot_ids=_snapshots_as_of(settings, when),
                )
                source = table
                train_matrix = table.lookup(list(train_subjects))
    except PipelineError as exc:
        raise FeatureError(f"feature store ({mode}, {service}): {exc}") from exc
    known = ~np.isnan(train_matrix).all(axis=1)
    if not known.any():
        raise FeatureError(
            f"none of the {len(train_subjects)} training subjects has features in {service!r} "
            f"({mode}); build features for these files or train with --features none"
        )
    record["train_subjects_without_features"] = int((~known).sum())
    return FeatureSetup(source=source, scaler=FeatureScaler.fit(train_matrix), record=record)


__all__ = [
    "FEATURE_MODES",
    "FEATURE_POLICIES",
    "FEATURE_SETS",
    "BatchCollate",
    "FeatureScaler",
    "FeatureSetup",
    "FeatureSource",
    "OnlineFeatureSource",
    "TableFeatureSource",
    "base_feature_name",
    "check_no_labels",
    "select_columns",
    "setup_features",
]
