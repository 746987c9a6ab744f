"""Fixtures of the dashboard tests: a feature store over the small demo data and a tracking
database holding a real short training (epochs, steps, checkpoints, log), a registered model
and the catalogued data files.

The store lives on a private redis-server (materialization never touches the shared test Redis
databases); the run is recorded in a MongoDB database of this module's own, dropped at the end.
The dashboard only reads, so the tests of a module share them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from dashboard_testlib import PATIENT

from services.connections import mongo_client
from services.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


@dataclass(frozen=True)
class DashEnv:
    """Servers and data the dashboard is pointed at."""

    redis_url: str
    mongo_uri: str
    mongo_db: str
    data_dir: Path
    demo: object  # demodata.writer.DemoData
    run_id: str | None = None
    run_name: str | None = None

    @property
    def settings(self) -> Settings:
        return Settings(
            redis_url=self.redis_url,
            mongo_uri=self.mongo_uri,
            mongo_db=self.mongo_db,
            data_dir=self.data_dir,
            feature_repo=FEATURE_REPO,
            redis_source="configured",
            mongo_source="configured",
        )

    @property
    def environ(self) -> dict[str, str]:
        """The environment ``eegfs`` (and the dashboard) read their settings from."""
        return {
            "REDIS_URL": self.redis_url,
            "MONGO_URI": self.mongo_uri,
            "MONGO_DB": self.mongo_db,
            "EEGFS_DATA_DIR": str(self.data_dir),
            "EEGFS_FEATURE_REPO": str(FEATURE_REPO),
        }

    @property
    def c2_files(self) -> list[str]:
        return [str(p) for p in sorted(self.demo.challenge2.values())]


@pytest.fixture(scope="session")
def feature_store(small_demo, materialized_store, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A built, applied and materialized feature store: (private Redis URL, data dir)."""
    with materialized_store(small_demo, tmp_path_factory.mktemp("dashboard-store")) as settings:
        yield settings.redis_url, settings.data_dir


@contextmanager
def _module_db(mongo_uri: str) -> Iterator[str]:
    name = f"t_dashboard_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        client = mongo_client(mongo_uri, **PATIENT)
        try:
            client.drop_database(name)
        finally:
            client.close()


@pytest.fixture(scope="module")
def demo_env(feature_store, mongo_server_uri, small_demo) -> Iterator[DashEnv]:
    """The demo run: a real 3-epoch training with online features, its best checkpoint
    registered as ``demo-model`` (alias ``candidate``) and the data files catalogued."""
    from eegfs.cli import cli
    from tracking.registry import ModelRegistry
    from training.runner import TrainConfig, train

    redis_url, data_dir = feature_store
    with _module_db(mongo_server_uri) as db_name:
        env = DashEnv(redis_url, mongo_server_uri, db_name, data_dir, small_demo)
        result = train(
            env.settings,
            TrainConfig(
                challenge=2,
                data=tuple(env.c2_files),
                epochs=3,
                batch_size=8,
                workers=0,
                features="online",
                log_every=2,
                seed=0,
                name="dash-demo",
                tags=("demo",),
            ),
            progress=False,
        )
        runner = CliRunner()
        registered = runner.invoke(cli, ["datasets", "register", *env.c2_files], env=env.environ)
        assert registered.exit_code == 0, registered.output
        client = mongo_client(mongo_server_uri)
        try:
            db = client[db_name]
            best = db.checkpoints.find_one(
                {"experiment_id": db.experiments.find_one()["_id"], "is_best": True}
            )
            ModelRegistry(db).register("demo-model", best["_id"], aliases=["candidate"])
        finally:
            client.close()
        yield DashEnv(
            redis_url,
            mongo_server_uri,
            db_name,
            data_dir,
            small_demo,
            run_id=result.experiment_id,
            run_name="dash-demo",
        )


@pytest.fixture
def empty_env(mongo_server_uri, mongo_db_name, redis_url, tmp_path, small_demo) -> DashEnv:
    """Servers with nothing recorded: an empty database, an empty Redis db, no features."""
    return DashEnv(redis_url, mongo_server_uri, mongo_db_name, tmp_path / "data", small_demo)


@pytest.fixture(scope="module")
def module_db(mongo_server_uri) -> Iterator:
    """A MongoDB database of this test module's own (pymongo handle), dropped at the end."""
    with _module_db(mongo_server_uri) as name:
        client = mongo_client(mongo_server_uri, **PATIENT)
        try:
            yield client[name]
        finally:
            client.close()
