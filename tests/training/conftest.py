"""Fixtures of the training tests: one built, applied and materialized feature store per module.

The store lives on a private redis-server (so materialization never touches the shared test
Redis databases) with the small demo data of the session; each test gets settings with its own
MongoDB database and checkpoint directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.settings import Settings
from training.config import TrainConfig

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


@dataclass(frozen=True)
class FeatureEnv:
    """A materialized feature store over the session's small demo data."""

    redis_url: str
    data_dir: Path
    demo: object  # demodata.writer.DemoData

    @property
    def c2_files(self) -> tuple[str, ...]:
        return tuple(str(p) for p in sorted(self.demo.challenge2.values()))

    @property
    def c1_files(self) -> tuple[str, ...]:
        return tuple(str(p) for p in sorted(self.demo.challenge1.values()))

    def small_config(self, **overrides) -> TrainConfig:
        """A one-epoch Challenge 2 run over this data (batches of 8, no workers, no features,
        seed 0) with ``overrides`` applied."""
        values = {
            "challenge": 2,
            "data": self.c2_files,
            "epochs": 1,
            "batch_size": 8,
            "workers": 0,
            "features": "none",
            "seed": 0,
            **overrides,
        }
        return TrainConfig(**values)


@pytest.fixture(scope="module")
def feature_env(small_demo, materialized_store, tmp_path_factory) -> Iterator[FeatureEnv]:
    with materialized_store(small_demo, tmp_path_factory.mktemp("training-store")) as settings:
        yield FeatureEnv(redis_url=settings.redis_url, data_dir=settings.data_dir, demo=small_demo)


@pytest.fixture
def train_settings(feature_env, mongo_server_uri, mongo_db_name, tmp_path) -> Settings:
    """Settings: the module's feature store and Redis, this test's own MongoDB database."""
    return Settings(
        redis_url=feature_env.redis_url,
        mongo_uri=mongo_server_uri,
        mongo_db=mongo_db_name,
        data_dir=feature_env.data_dir,
        feature_repo=FEATURE_REPO,
        redis_source="configured",
        mongo_source="configured",
    )
