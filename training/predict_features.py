"""The subject features of a prediction, each subject from the first source that has it.

1. ``snapshot``: the offline snapshots the model recorded (read as of their latest time and
   limited to them: the values the run's online store served, or its historical frame).
2. ``online``: the online store now (a subject recorded after the model was trained).
3. ``pushed``: the input file is pushed first (:func:`featurestore.push.push_file`, with a
   message saying so), then the online store is read again.

A subject none of them knows is ``missing``; the model's missing-feature policy applies to it
as in training (impute with an all-zero availability mask, or refuse). The columns are the
checkpoint's, in its order, so the scaler fitted at training time applies unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training.errors import FeatureError
from training.features import TableFeatureSource
from training.predict_model import FeatureLineage

SNAPSHOT, ONLINE, PUSHED, MISSING = "snapshot", "online", "pushed", "missing"
SOURCES = (SNAPSHOT, ONLINE, PUSHED, MISSING)


@dataclass
class SubjectFeatures:
    """Feature rows of the subjects of a file and where each came from."""

    source: TableFeatureSource
    sources: dict[str, str]  # subject -> snapshot | online | pushed | missing
    pushed_snapshot_ids: list[str] = field(default_factory=list)
    missing_snapshot_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Subjects per source (every source listed, 0 when unused)."""
        found = Counter(self.sources.values())
        return {s: int(found.get(s, 0)) for s in SOURCES}


def _known(matrix: np.ndarray) -> np.ndarray:
    """Rows with at least one value (a subject the source knows)."""
    return ~np.isnan(matrix).all(axis=1) if matrix.size else np.zeros(len(matrix), bool)


class _Gatherer:
    """Fills one (n_subjects, n_columns) matrix source by source."""

    def __init__(self, client, lineage: FeatureLineage, subjects: Sequence[str]) -> None:
        self.client = client
        self.lineage = lineage
        self.subjects = list(subjects)
        all_columns = client.matrix_columns(lineage.service)
        absent = [c for c in lineage.columns if c not in all_columns]
        if absent:
            raise FeatureError(
                f"feature service {lineage.service!r} no longer has column(s) {absent[:5]} the "
                "model was trained with; predict with the feature repository of its run"
            )
        where = {c: i for i, c in enumerate(all_columns)}
        self.idx = np.asarray([where[c] for c in lineage.columns], dtype=np.int64)
        self.matrix = np.full((len(self.subjects), len(self.idx)), np.nan, np.float32)
        self.sources: dict[str, str] = {}

    def pending(self) -> list[str]:
        return [s for s in self.subjects if s not in self.sources]

    def take(self, subjects: list[str], matrix: np.ndarray, source: str) -> None:
        rows = {s: i for i, s in enumerate(self.subjects)}
        selected = np.asarray(matrix, np.float32)[:, self.idx]
        for subject, row, known in zip(subjects, selected, _known(selected), strict=True):
            if known:
                self.matrix[rows[subject]] = row
                self.sources[subject] = source

    def from_snapshot(self, features_dir: Path) -> list[str]:
        """Subjects of the recorded snapshots; returns the recorded ids the store lacks."""
        from featurestore.historical import snapshots_time

        ids = self.lineage.snapshot_ids
        if not ids:
            return []
        when, missing = snapshots_time(features_dir, ids)
        present = [s for s in ids if s not in missing]
        if when is None:
            return missing
        if self.lineage.as_of:
            when = pd.Timestamp(self.lineage.as_of)
        pending = self.pending()
        entity_df = pd.DataFrame({"subject_id": pending, "event_timestamp": [when] * len(pending)})
        matrix, _ = self.client.get_historical_matrix(
            entity_df, self.lineage.service, snapshot_ids=present
        )
        self.take(pending, matrix, SNAPSHOT)
        return missing

    def from_online(self, source: str) -> None:
        pending = self.pending()
        if pending:
            matrix, _ = self.client.get_online_matrix(pending, self.lineage.service)
            self.take(pending, matrix, source)


def gather_features(
    settings,
    lineage: FeatureLineage,
    subjects: Sequence[str],
    h5_path: str | Path,
    *,
    push: bool = True,
    echo: Callable[[str], None] | None = None,
) -> SubjectFeatures:
    """Feature rows (the checkpoint's columns) of ``subjects``: snapshot, online, else pushed.

    Raises
    ------
    FeatureError
        A column the model needs is gone from the service, or the store fails.
    """
    from featurestore.client import FeatureStoreClient
    from featurestore.push import push_file
    from pipelines.errors import PipelineError

    say = echo or (lambda text: None)
    pushed: list[str] = []
    try:
        with FeatureStoreClient(settings, cache_size=0) as client:
            gather = _Gatherer(client, lineage, subjects)
            missing_ids = gather.from_snapshot(settings.features_dir)
            gather.from_online(ONLINE)
            pending = gather.pending()
            if pending and push:
                shown = ", ".join(pending[:5]) + (" ..." if len(pending) > 5 else "")
                say(f"subject {shown} not in the online store: pushing {h5_path} first")
                pushed = push_file(settings, h5_path, client=client).snapshot_ids
                gather.from_online(PUSHED)
    except PipelineError as exc:
        raise FeatureError(f"feature store ({lineage.service}): {exc}") from exc
    sources = {s: gather.sources.get(s, MISSING) for s in gather.subjects}
    table = TableFeatureSource(
        "predict", lineage.service, lineage.columns, gather.subjects, gather.matrix
    )
    return SubjectFeatures(table, sources, pushed, missing_ids)


__all__ = [
    "MISSING",
    "ONLINE",
    "PUSHED",
    "SNAPSHOT",
    "SOURCES",
    "SubjectFeatures",
    "gather_features",
]
