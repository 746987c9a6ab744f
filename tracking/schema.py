"""Collection names and indexes of the tracking database (created idempotently at start-up).

Collections (database ``settings.mongo_db``, default ``eeg2025``):

``experiments``   one document per run
``epochs``        one document per (experiment, epoch), unique
``metrics``       step-level series in bucket documents of at most ``BUCKET_MAX_POINTS`` points
``checkpoints``   checkpoint files (path, size, sha256, metrics, is_best, optional GridFS copy)
``subjects``      EEG2025 subject documents (demographics, releases, quality, annotations)
``datasets``      catalogue of HDF5 files
``models``        the model registry: one document per model name (aliases, latest version)
``model_versions``  one document per registered version (lineage, checksum, GridFS copy)
``migrations``    one document per migrated SQLite source file
``claims``        one document per run identity being trained with --skip-if-done (``_id`` is
                  the identity, so the ``_id`` index is its unique key; see tracking/claims.py)
``predictions``   one document per ``eegfs predict`` (model version, input sha256, feature
                  snapshots, counts, timing, output files; see tracking/predictions.py)
``fs.files`` / ``fs.chunks``  GridFS bucket ``fs`` (uploaded checkpoints)
"""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

EXPERIMENTS = "experiments"
EPOCHS = "epochs"
METRICS = "metrics"
CHECKPOINTS = "checkpoints"
SUBJECTS = "subjects"
DATASETS = "datasets"
MODELS = "models"
MODEL_VERSIONS = "model_versions"
MIGRATIONS = "migrations"
CLAIMS = "claims"
PREDICTIONS = "predictions"
GRIDFS_BUCKET = "fs"

#: Points per ``metrics`` bucket document: 1000 points of ~10 metrics stay far below 16 MB.
BUCKET_MAX_POINTS = 1000

#: Version of the document layout, stored on every experiment.
SCHEMA_VERSION = 1

_LEGACY_KEY = [("legacy.source", ASCENDING), ("legacy.table", ASCENDING), ("legacy.id", ASCENDING)]


def _legacy_index() -> IndexModel:
    # Rows migrated from SQLite carry legacy = {source, table, id}; a rerun inserts nothing new.
    return IndexModel(
        _LEGACY_KEY,
        name="legacy_unique",
        unique=True,
        partialFilterExpression={"legacy.source": {"$exists": True}},
    )


INDEXES: dict[str, list[IndexModel]] = {
    EXPERIMENTS: [
        IndexModel(
            [("challenge", ASCENDING), ("status", ASCENDING), ("started_at", DESCENDING)],
            name="challenge_status_started",
        ),
        IndexModel([("status", ASCENDING), ("heartbeat", ASCENDING)], name="status_heartbeat"),
        IndexModel([("started_at", DESCENDING)], name="started_at"),
        IndexModel([("tags", ASCENDING)], name="tags"),
        # Runs of queued jobs (``job: {id, attempt}``), found by the job supervisor.
        IndexModel(
            [("job.id", ASCENDING), ("job.attempt", ASCENDING)],
            name="job_attempt",
            partialFilterExpression={"job.id": {"$exists": True}},
        ),
        IndexModel([("name", ASCENDING)], name="name"),
        _legacy_index(),
    ],
    EPOCHS: [
        IndexModel(
            [("experiment_id", ASCENDING), ("epoch", ASCENDING)],
            name="experiment_epoch",
            unique=True,
        ),
        IndexModel([("logged_at", ASCENDING)], name="logged_at"),
        _legacy_index(),
    ],
    METRICS: [
        IndexModel(
            [("experiment_id", ASCENDING), ("first_step", ASCENDING)], name="experiment_first_step"
        ),
    ],
    CHECKPOINTS: [
        IndexModel([("experiment_id", ASCENDING), ("epoch", ASCENDING)], name="experiment_epoch"),
        # At most one best checkpoint per experiment, whatever the writers do.
        IndexModel(
            [("experiment_id", ASCENDING)],
            name="one_best_per_experiment",
            unique=True,
            partialFilterExpression={"is_best": True},
        ),
        IndexModel([("sha256", ASCENDING)], name="sha256"),
        _legacy_index(),
    ],
    SUBJECTS: [
        IndexModel([("subject_id", ASCENDING)], name="subject_id", unique=True),
        IndexModel([("releases", ASCENDING)], name="releases"),
        _legacy_index(),
    ],
    DATASETS: [
        IndexModel(
            [("sha256", ASCENDING)],
            name="sha256",
            unique=True,
            partialFilterExpression={"sha256": {"$type": "string"}},
        ),
        IndexModel([("challenge", ASCENDING), ("release", ASCENDING)], name="challenge_release"),
        _legacy_index(),
    ],
    MODELS: [IndexModel([("name", ASCENDING)], name="name", unique=True)],
    MODEL_VERSIONS: [
        IndexModel([("name", ASCENDING), ("version", ASCENDING)], name="name_version", unique=True),
        IndexModel([("lineage.experiment_id", ASCENDING)], name="experiment"),
    ],
    MIGRATIONS: [IndexModel([("source.sha256", ASCENDING)], name="source", unique=True)],
    PREDICTIONS: [
        IndexModel(
            [("model.name", ASCENDING), ("model.version", ASCENDING), ("created_at", DESCENDING)],
            name="model_created",
        ),
        IndexModel([("input.sha256", ASCENDING)], name="input_sha256"),
        IndexModel([("created_at", DESCENDING)], name="created_at"),
    ],
}


def ensure_indexes(db: Database) -> None:
    """Create every index of the tracking collections (a no-op when they exist)."""
    for collection, indexes in INDEXES.items():
        db[collection].create_indexes(indexes)
