"""The dashboard's one door to the rest of the project.

Every name the dashboard takes from ``tracking``, ``training``, ``pipelines`` and ``services`` is
imported here and nowhere else in the package, so when those packages move things (the feature
store client, run statuses, the tracking CLI) only this module changes. It also opens the two
read-only handles every page uses: a pymongo database (short timeouts, no index creation: the
dashboard never writes) and a redis-py client.

What is relied on:

* ``tracking.schema``: collection names (experiments, epochs, metrics, checkpoints, models,
  model_versions, datasets) and the capacity of a step-metrics bucket.
* ``tracking.status``: the reported status of a run (``present``: ``stale`` for a running run
  whose heartbeat is older than the threshold) and the MongoDB filter for a reported status.
* ``tracking.queries``: a run's metric expression (summary, else last epoch) and
  ``compare_runs`` (config differences, summaries, per-epoch curves of several runs).
* ``tracking.spool``: where trackers spool writes while MongoDB is away, and the file pattern.
* ``training.live``: the Redis hash holding a run's latest live state.
* ``featurestore.marker``: the Redis key of the online store's materialization marker.
* ``pipelines.feature_tables``: the manifest of committed feature snapshots and table names;
  ``pipelines.errors.PipelineError``, what reading them raises (an unreadable manifest...).
* ``services``: settings, clients with short timeouts, password masking.
"""

from __future__ import annotations

from pymongo import MongoClient
from pymongo.database import Database

from featurestore.marker import marker_key
from pipelines.errors import PipelineError
from pipelines.feature_tables import SUBJECT_FEATURES, Manifest, read_tables
from services.connections import mask_uri, mongo_client, redis_client
from services.settings import Settings, load_settings
from tracking.errors import NotFoundError as TrackingNotFoundError
from tracking.queries import compare_runs, metric_expr
from tracking.schema import (
    BUCKET_MAX_POINTS,
    CHECKPOINTS,
    DATASETS,
    EPOCHS,
    EXPERIMENTS,
    METRICS,
    MODEL_VERSIONS,
    MODELS,
    PREDICTIONS,
)
from tracking.spool import SPOOL_GLOB, default_spool_dir
from tracking.status import (
    ALL_STATUSES,
    DEFAULT_STALE_AFTER_S,
    RUNNING,
    present,
    status_filter,
)
from training.live import state_key

#: How long a page waits for MongoDB or Redis before it says the server is not answering.
MONGO_TIMEOUT_MS = 2000
MONGO_READ_TIMEOUT_MS = 30_000
REDIS_TIMEOUT_S = 0.5


def open_mongo(uri: str) -> MongoClient:
    """A pymongo client for the dashboard (it never creates indexes or writes).

    Finding the server gives up after :data:`MONGO_TIMEOUT_MS`, so a page says at once that
    MongoDB is away. Connections and replies get longer (:data:`MONGO_READ_TIMEOUT_MS`): pymongo
    cancels the queries in flight when a heartbeat outlasts ``connectTimeoutMS``, and a busy
    server counting many runs can be slow to answer a heartbeat.
    """
    return mongo_client(
        uri,
        timeout_ms=MONGO_TIMEOUT_MS,
        appname="eegfs-dashboard",
        connectTimeoutMS=MONGO_READ_TIMEOUT_MS,
        socketTimeoutMS=MONGO_READ_TIMEOUT_MS,
    )


def tracking_db(client: MongoClient, settings: Settings) -> Database:
    """The tracking database of ``settings`` on ``client``."""
    return client[settings.mongo_db]


def open_redis(url: str):
    """A redis-py client for the dashboard's reads (live state, marker, health)."""
    return redis_client(url, timeout_s=REDIS_TIMEOUT_S)


def online_marker_pattern() -> str:
    """SCAN pattern matching the materialization marker of every Feast project."""
    return marker_key("*")


__all__ = [
    "ALL_STATUSES",
    "BUCKET_MAX_POINTS",
    "CHECKPOINTS",
    "DATASETS",
    "DEFAULT_STALE_AFTER_S",
    "EPOCHS",
    "EXPERIMENTS",
    "METRICS",
    "MODELS",
    "PREDICTIONS",
    "MODEL_VERSIONS",
    "RUNNING",
    "PipelineError",
    "SPOOL_GLOB",
    "SUBJECT_FEATURES",
    "Manifest",
    "Settings",
    "TrackingNotFoundError",
    "compare_runs",
    "default_spool_dir",
    "load_settings",
    "mask_uri",
    "metric_expr",
    "online_marker_pattern",
    "open_mongo",
    "open_redis",
    "present",
    "read_tables",
    "state_key",
    "status_filter",
    "tracking_db",
]
