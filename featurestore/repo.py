"""The Feast repository (``feature_repo/``) and the Feast configuration built from the settings.

The registry lives in ``settings.features_dir / "feast/registry.db"``, the offline data in
``settings.features_dir`` (source paths are re-based there at apply time through each source's
``eegfs_table`` tag) and the online store is the Redis of ``settings.redis_url``, reached through
the client that :func:`open_feature_store` hands to Feast. ``feature_repo/feature_store.yaml``
supplies the rest (project, provider, serialization version).
"""

from __future__ import annotations

import importlib.util
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from featurestore import feast_adapter
from featurestore.errors import FeatureStoreError
from featurestore.labels import INPUT_SERVICES, LABEL_SERVICES, check_label_exclusion
from services.connections import ServiceError, redis_host_port_db
from services.settings import Settings

REGISTRY_RELATIVE = Path("feast") / "registry.db"
YAML_NAME = "feature_store.yaml"
#: The join key of the one entity (``subject``) every view is keyed by.
ENTITY_KEY = "subject_id"
#: Tag of a file source naming its table relative to the features directory.
TABLE_TAG = "eegfs_table"


def registry_path(settings: Settings) -> Path:
    """Where the Feast registry of ``settings`` lives."""
    return (Path(settings.features_dir) / REGISTRY_RELATIVE).resolve()


def read_repo_yaml(feature_repo: Path) -> dict:
    """``feature_store.yaml`` of ``feature_repo`` as a dict (checked: a project, a Redis store).

    Raises
    ------
    FeatureStoreError
        Missing or unreadable file, no project, another online store type.
    """
    import yaml

    path = Path(feature_repo) / YAML_NAME
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise FeatureStoreError(
            f"{path}: not found; EEGFS_FEATURE_REPO must point at the feature_repo/ directory"
        ) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise FeatureStoreError(f"{path}: unreadable Feast configuration: {exc}") from exc
    if not isinstance(raw, dict) or "project" not in raw:
        raise FeatureStoreError(f"{path}: no 'project' key; expected a Feast feature_store.yaml")
    online = raw.get("online_store") or {}
    if not isinstance(online, dict) or online.get("type") != "redis":
        raise FeatureStoreError(f"{path}: online_store.type must be 'redis', found {online!r}")
    return raw


@dataclass
class RepoObjects:
    """Feast objects defined in the feature repository."""

    entities: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    feature_views: list = field(default_factory=list)
    feature_services: list = field(default_factory=list)

    def add(self, value) -> None:
        """File ``value`` under its kind (anything that is no Feast object is ignored)."""
        from feast import Entity, FeatureService, FeatureView
        from feast.data_source import DataSource

        for kind, bucket in (
            (Entity, self.entities),
            (DataSource, self.sources),
            (FeatureView, self.feature_views),
            (FeatureService, self.feature_services),
        ):
            if isinstance(value, kind):
                bucket.append(value)
                return


def batch_sources(sources) -> list:
    """The sources that hold data (push sources only forward rows to their views)."""
    from feast.data_source import PushSource

    return [s for s in sources if not isinstance(s, PushSource)]


def _import_definitions(path: Path):
    """Import one definition file under a private module name (no chdir, no sys.path change)."""
    name = f"_eegfs_feature_repo_{uuid.uuid4().hex[:8]}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FeatureStoreError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a definition error: show it with the file name
        raise FeatureStoreError(f"{path}: importing the Feast definitions failed: {exc!r}") from exc
    return module


def load_repo_objects(feature_repo: Path) -> RepoObjects:
    """Import every top-level ``.py`` of ``feature_repo`` (as ``feast apply`` does, minus files
    starting with ``_`` or ``test_``) and collect its Feast objects.

    Safe inside a library and in parallel tests: modules are loaded from their files under
    private names.
    """
    files = sorted(
        p for p in Path(feature_repo).glob("*.py") if not p.name.startswith(("_", "test_"))
    )
    if not files:
        raise FeatureStoreError(f"{feature_repo}: no Feast definition module (*.py) found")
    objs = RepoObjects()
    seen: set[int] = set()
    for path in files:
        for value in vars(_import_definitions(path)).values():
            if id(value) not in seen:
                seen.add(id(value))
                objs.add(value)
    return objs


def repo_config(settings: Settings):
    """Feast ``RepoConfig`` for ``settings`` (no file is written).

    The online store's connection string names the host, port and database of ``REDIS_URL``
    and nothing else: credentials and TLS come with the client that :func:`open_feature_store`
    gives Feast.
    """
    from feast.repo_config import RepoConfig

    raw = dict(read_repo_yaml(settings.feature_repo))
    try:
        host, port, db = redis_host_port_db(settings.redis_url)
    except ServiceError as exc:
        raise FeatureStoreError(str(exc)) from exc
    raw["registry"] = {**(raw.get("registry") or {}), "path": str(registry_path(settings))}
    raw["online_store"] = {**raw["online_store"], "connection_string": f"{host}:{port},db={db}"}
    try:
        cfg = RepoConfig(**raw)
    except Exception as exc:  # pydantic ValidationError and friends
        raise FeatureStoreError(
            f"{settings.feature_repo / YAML_NAME}: invalid Feast configuration: {exc}"
        ) from exc
    cfg.repo_path = Path(settings.feature_repo).resolve()
    return cfg


def open_feature_store(settings: Settings, redis_client):
    """A ``feast.FeatureStore`` for ``settings`` whose online store uses ``redis_client``."""
    from feast import FeatureStore

    store = FeatureStore(config=repo_config(settings))
    feast_adapter.attach_redis_client(store, redis_client)
    return store


def require_registry(settings: Settings) -> None:
    """Raise :class:`FeatureStoreError` with the fix when no registry was applied yet."""
    if not registry_path(settings).exists():
        raise FeatureStoreError(
            f"no Feast registry at {registry_path(settings)}; run `eegfs features apply` "
            "(after `eegfs features build`)"
        )


def check_feature_repo(settings: Settings) -> str:
    """Check the Feast repository without any network access (for ``eegfs doctor``).

    Returns a one-line description; raises :class:`FeatureStoreError` with a fix otherwise.
    """
    raw = read_repo_yaml(settings.feature_repo)
    objs = load_repo_objects(settings.feature_repo)
    names = {fs.name for fs in objs.feature_services}
    missing = sorted((set(INPUT_SERVICES.values()) | set(LABEL_SERVICES.values())) - names)
    if missing:
        raise FeatureStoreError(
            f"{settings.feature_repo}: feature service(s) {missing} are not defined; restore "
            "feature_repo/eeg_features.py from git"
        )
    check_label_exclusion(objs.feature_services, objs.feature_views)
    untagged = [s.name for s in batch_sources(objs.sources) if TABLE_TAG not in (s.tags or {})]
    if untagged:
        raise FeatureStoreError(
            f"{settings.feature_repo}: source(s) {untagged} lack the {TABLE_TAG!r} tag that "
            f"places them under the features directory; add tags={{'{TABLE_TAG}': '<table>'}}"
        )
    state = (
        "applied"
        if registry_path(settings).exists()
        else "not applied yet (run `eegfs features apply`)"
    )
    return (
        f"Feast project {raw['project']!r}: {len(objs.feature_views)} views, "
        f"{len(objs.feature_services)} services; registry {state}"
    )


__all__ = [
    "ENTITY_KEY",
    "TABLE_TAG",
    "RepoObjects",
    "batch_sources",
    "check_feature_repo",
    "load_repo_objects",
    "open_feature_store",
    "read_repo_yaml",
    "registry_path",
    "repo_config",
    "require_registry",
]
