"""The one feature store client: Feast apply and materialize, online and historical retrieval.

Everything else (training, commands, benchmarks) goes through :class:`FeatureStoreClient`::

    client = FeatureStoreClient(settings)
    client.apply()                       # register feature_repo/ definitions in the registry
    client.materialize()                 # offline Parquet snapshots -> Redis
    df = client.get_online_features(["NDARAB123456"], "challenge2_inputs_v1")
    X, names = client.get_historical_matrix(entity_df, INPUT_SERVICES[2])

Configuration comes from :class:`~services.settings.Settings` only (see
:mod:`featurestore.repo`). Missing values are NaN in every result, online or offline; scalar
features keep their Feast type as a NumPy dtype, list features are float32 arrays, strings stay
strings (:mod:`featurestore.values`).

The online cache (``cache_size`` rows) is dropped whenever a materialization (here or in another
process) has written a new marker key to Redis (:mod:`featurestore.online`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from featurestore import matrices
from featurestore.catalog import ServiceInfo, load_service
from featurestore.connection import open_redis
from featurestore.errors import FeatureStoreError
from featurestore.historical import OfflineReader
from featurestore.marker import parse_marker, read_marker_raw
from featurestore.materialize import apply_repo, materialize_snapshots
from featurestore.online import OnlineReader
from featurestore.repo import ENTITY_KEY, open_feature_store, read_repo_yaml, require_registry
from services.ids import normalize_subject_ids
from services.settings import Settings


class FeatureStoreClient:
    """Feast + Redis + Parquet snapshots behind one object.

    Parameters
    ----------
    settings : Settings
        Uses ``redis_url``, ``features_dir`` (offline store and registry) and ``feature_repo``.
    cache_size : int
        Rows (subject x service) kept in the in-process online cache; 0 disables it.
    """

    def __init__(self, settings: Settings, *, cache_size: int = 4096):
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.settings = settings
        self.cache_size = cache_size
        self.project = str(read_repo_yaml(settings.feature_repo)["project"])
        self._store = None
        self._redis = None
        self._online: OnlineReader | None = None
        self._services: dict[str, ServiceInfo] = {}
        self._plans = matrices.PlanCache(settings.features_dir)
        self._offline = OfflineReader(settings.features_dir)
        self._lock = threading.RLock()
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> FeatureStoreClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the Redis connection and caches. The client cannot be used afterwards."""
        self._closed = True
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        self._store = None
        self._online = None
        self._forget_registry()
        self._offline.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise FeatureStoreError("this FeatureStoreClient is closed; create a new one")

    @property
    def redis(self):
        """The redis-py client of ``settings.redis_url`` (shared with Feast's online store)."""
        self._check_open()
        if self._redis is None:
            self._redis = open_redis(self.settings.redis_url)
        return self._redis

    @property
    def store(self):
        """The underlying ``feast.FeatureStore`` (created on first use)."""
        self._check_open()
        if self._store is None:
            self._store = open_feature_store(self.settings, self.redis)
        return self._store

    @property
    def online(self) -> OnlineReader:
        self._check_open()
        if self._online is None:
            self._online = OnlineReader(
                self.redis,
                self.settings.redis_url,
                self.project,
                self.cache_size,
                self._on_new_materialization,
            )
        return self._online

    def _forget_registry(self) -> None:
        with self._lock:
            self._services.clear()
            self._plans.clear()

    def _on_new_materialization(self) -> None:
        self._forget_registry()
        if self._store is not None:
            self._store.refresh_registry()

    # --- apply / materialize --------------------------------------------------------------
    def apply(self) -> None:
        """Register the definitions of ``settings.feature_repo`` (idempotent)."""
        apply_repo(self.store, self.settings, self.project)
        self._forget_registry()
        self._offline.clear()

    def materialize(self, end: datetime | None = None) -> None:
        """Load every snapshot not yet in Redis into the online store (up to ``end``, default
        now), then write the marker that drops every client's online cache (see
        :func:`featurestore.materialize.materialize_snapshots`)."""
        materialize_snapshots(self.store, self.redis, self.settings, self.project, end)
        self.online.sync_marker()

    def served_snapshot_id(self) -> str | None:
        """Id of the snapshot set the online store serves (latest materialization), or None."""
        self._check_open()
        marker = parse_marker(read_marker_raw(self.redis, self.project, self.settings.redis_url))
        return None if marker is None else marker.get("store_snapshot_id")

    def served_snapshot_ids(self) -> list[str] | None:
        """Ids of the offline snapshots the online store serves (latest materialization), or None."""
        self._check_open()
        marker = parse_marker(read_marker_raw(self.redis, self.project, self.settings.redis_url))
        return None if marker is None else list(marker.get("snapshot_ids") or [])

    def cache_info(self) -> dict:
        """Online cache statistics and the materialization marker it is valid for."""
        return self.online.cache_info()

    # --- service metadata -----------------------------------------------------------------
    def service_info(self, service: str) -> ServiceInfo:
        """Views, features, kinds and Redis layout of ``service`` (cached until a new
        materialization or ``apply``)."""
        info = self._services.get(service)
        if info is None:
            require_registry(self.settings)
            info = load_service(self.store, service)
            with self._lock:
                self._services[service] = info
        return info

    def feature_names(self, service: str) -> list[str]:
        """Feature names of ``service`` in the column order of every result."""
        return self.service_info(service).names

    def matrix_columns(self, service: str) -> list[str]:
        """Column names of :meth:`get_online_matrix` / :meth:`get_historical_matrix`.

        Scalars keep their name, list features become ``name[channel]`` in the file's channel
        order, categoricals become ``<name>_code`` (sex: M=1, F=0, else NaN).
        """
        return matrices.column_names(self._plans.get(self.service_info(service)))

    # --- online ---------------------------------------------------------------------------
    def _online_block(self, subject_ids: Sequence[str], service: str):
        self._check_open()
        ids = normalize_subject_ids(subject_ids)
        info, block = self.online.read(ids, lambda: self.service_info(service))
        return ids, info, block

    def get_online_features(self, subject_ids: Sequence[str], service: str) -> pd.DataFrame:
        """Online features of ``service`` for ``subject_ids`` (from Redis, through the cache).

        Returns one row per requested id in order (duplicates allowed), ids normalised, columns
        ``subject_id`` + :meth:`feature_names`; NaN where missing.
        """
        ids, info, block = self._online_block(subject_ids, service)
        data: dict[str, Any] = {ENTITY_KEY: ids}
        for j, name in enumerate(info.names):
            data[name] = block.column(info, j)
        return pd.DataFrame(data, copy=False)

    def get_online_matrix(
        self, subject_ids: Sequence[str], service: str
    ) -> tuple[np.ndarray, list[str]]:
        """``(X, columns)``: float32 (n, d) matrix of :meth:`get_online_features` (NaN missing).

        Built straight from the online values (the same conversions as for a DataFrame, without
        building one).
        """
        _, info, block = self._online_block(subject_ids, service)
        plan = self._plans.get(info)
        where = {name: j for j, name in enumerate(info.names)}

        def column(feat: str, encoding: str):
            return block.column(info, where[feat])

        return matrices.fill_matrix(plan, len(block), column), matrices.column_names(plan)

    # --- historical -----------------------------------------------------------------------
    def get_historical_features(
        self,
        entity_df: pd.DataFrame,
        service: str,
        *,
        snapshot_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Point-in-time correct features of ``service`` for each row of ``entity_df``.

        Parameters
        ----------
        entity_df : DataFrame
            Columns ``subject_id`` and ``event_timestamp`` (tz-aware; naive is taken as UTC).

        Returns
        -------
        DataFrame
            Exactly one row per entity row, same order, columns ``subject_id``,
            ``event_timestamp`` (UTC) + :meth:`feature_names`; NaN where no value existed at
            that time (see :mod:`featurestore.historical`).
        snapshot_ids : sequence of str, optional
            Read only the rows of these offline snapshots (e.g. the ones a model recorded).
        """
        self._check_open()
        ids = None if snapshot_ids is None else frozenset(snapshot_ids)
        return self._offline.features(entity_df, self.service_info(service), ids)

    def get_historical_matrix(
        self,
        entity_df: pd.DataFrame,
        service: str,
        *,
        snapshot_ids: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """``(X, columns)``: float32 matrix of :meth:`get_historical_features` (NaN missing)."""
        frame = self.get_historical_features(entity_df, service, snapshot_ids=snapshot_ids)
        plan = self._plans.get(self.service_info(service))
        return matrices.frame_matrix(plan, frame), matrices.column_names(plan)

    def clear_offline_cache(self) -> None:
        """Forget the offline tables read so far (the next historical read reads the files)."""
        self._offline.clear()


__all__ = ["FeatureStoreClient"]
