"""The one feature store client: Feast apply and materialize, online and historical retrieval.

Everything else (training, commands, benchmarks) goes through :class:`FeatureStoreClient`::

    client = FeatureStoreClient(settings)
    client.apply()                       # register feature_repo/ definitions in the registry
    client.materialize()                 # offline Parquet snapshots -> Redis
    df = client.get_online_features(["NDARAB123456"], "challenge2_inputs_v1")
    X, names = client.get_historical_matrix(entity_df, INPUT_SERVICES[2])

Configuration comes from :class:`~services.settings.Settings` only: the Feast registry lives in
``settings.features_dir / "feast/registry.db"``, the offline data in ``settings.features_dir``
(source paths are re-based there at apply time through each source's ``eegfs_table`` tag) and
the online store is the Redis of ``settings.redis_url``, converted for Feast by
:func:`services.connections.feast_redis_connection_string`. ``feature_repo/feature_store.yaml``
supplies the rest (project, provider, serialization version).

Missing values are NaN in every result, online or offline (Feast gives None online and NaN
offline). Scalar features keep their Feast type as a NumPy dtype (Float32 -> float32, Float64 and
Int64 -> float64); list features are float32 arrays; strings stay strings.

The online cache (``cache_size`` rows per service) is dropped whenever :meth:`materialize`
(here or in another process) has written a new marker key to Redis: every online call reads that
one small key first.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import feature_tables as ft
from pipelines.errors import FeatureStoreError, PipelineError
from pipelines.participants import LABEL_COLUMNS
from pipelines.pit import normalize_entity_timestamps, point_in_time_join
from services.connections import (
    ServiceError,
    feast_redis_connection_string,
    mask_uri,
    redis_client,
)
from services.ids import normalize_subject_id, normalize_subject_ids
from services.settings import Settings

log = logging.getLogger(__name__)

INPUT_SERVICES: dict[int, str] = {1: "challenge1_inputs_v1", 2: "challenge2_inputs_v1"}
LABEL_SERVICES: dict[int, str] = {1: "challenge1_labels_v1", 2: "challenge2_labels_v1"}
#: Tag by which feature_repo/ marks label views and services (``tags={"role": "label"}``).
ROLE_TAG = "role"
LABEL_ROLE = "label"
#: Feature names that are labels (or derived from a label): never in an input service. This is
#: the one list (feature_repo/ cannot import it: it marks its label views with ``role=label``
#: instead, and :func:`label_feature_names` adds their fields; a test checks both agree):
#: participants.tsv's questionnaire scores, the per-window response time and its per-subject
#: summaries.
LABEL_FEATURES = frozenset(
    {*LABEL_COLUMNS, "response_time", "rt_mean", "rt_median", "rt_std", "n_rt_windows"}
)
#: Categorical features and their numeric codes in the matrices (anything else -> NaN).
CATEGORICAL_CODES: dict[str, dict[str, float]] = {
    "sex": {"M": 1.0, "MALE": 1.0, "F": 0.0, "FEMALE": 0.0},
}
REGISTRY_RELATIVE = Path("feast") / "registry.db"
YAML_NAME = "feature_store.yaml"
ENTITY_KEY = "subject_id"


def registry_path(settings: Settings) -> Path:
    """Where the Feast registry of ``settings`` lives."""
    return (Path(settings.features_dir) / REGISTRY_RELATIVE).resolve()


def marker_key(project: str) -> str:
    """Redis key written by :meth:`FeatureStoreClient.materialize` (JSON)."""
    return f"eegfs:feast:{project}:materialization"


# --- repository -------------------------------------------------------------------------------
@dataclass
class RepoObjects:
    """Feast objects defined in the feature repository."""

    entities: list
    sources: list
    feature_views: list
    feature_services: list


def _read_yaml(feature_repo: Path) -> dict:
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


def load_repo_objects(feature_repo: Path) -> RepoObjects:
    """Import every top-level ``.py`` of ``feature_repo`` (as ``feast apply`` does) and collect
    its Feast objects. Modules are loaded from their files under private names: no ``chdir`` and
    no ``sys.path`` change, so this is safe inside a library and in parallel tests."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    files = sorted(
        p for p in Path(feature_repo).glob("*.py") if not p.name.startswith(("_", "test_"))
    )
    if not files:
        raise FeatureStoreError(f"{feature_repo}: no Feast definition module (*.py) found")
    objs = RepoObjects([], [], [], [])
    seen: set[int] = set()
    for path in files:
        name = f"_eegfs_feature_repo_{uuid.uuid4().hex[:8]}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FeatureStoreError(f"{path}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a definition error: show it with the file name
            raise FeatureStoreError(
                f"{path}: importing the Feast definitions failed: {exc!r}"
            ) from exc
        for value in vars(module).values():
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, Entity):
                objs.entities.append(value)
            elif isinstance(value, DataSource):
                objs.sources.append(value)
            elif isinstance(value, FeatureView):
                objs.feature_views.append(value)
            elif isinstance(value, FeatureService):
                objs.feature_services.append(value)
    return objs


def repo_config(settings: Settings):
    """Feast ``RepoConfig`` for ``settings`` (no file is written)."""
    from feast.repo_config import RepoConfig

    raw = _read_yaml(settings.feature_repo)
    try:
        conn = feast_redis_connection_string(settings.redis_url)
    except ServiceError as exc:
        raise FeatureStoreError(str(exc)) from exc
    raw = dict(raw)
    raw["registry"] = {**(raw.get("registry") or {}), "path": str(registry_path(settings))}
    raw["online_store"] = {**raw["online_store"], "connection_string": conn}
    try:
        cfg = RepoConfig(**raw)
    except Exception as exc:  # pydantic ValidationError and friends
        raise FeatureStoreError(
            f"{settings.feature_repo / YAML_NAME}: invalid Feast configuration: {exc}"
        ) from exc
    cfg.repo_path = Path(settings.feature_repo).resolve()
    return cfg


def _is_label_view(view) -> bool:
    return (view.tags or {}).get(ROLE_TAG) == LABEL_ROLE


def label_feature_names(feature_views: list) -> frozenset[str]:
    """:data:`LABEL_FEATURES` plus every feature of the views tagged ``role=label``."""
    return LABEL_FEATURES | {f.name for v in feature_views if _is_label_view(v) for f in v.features}


def check_label_exclusion(feature_services: list, feature_views: list) -> None:
    """Raise when an input service (``INPUT_SERVICES``) holds a label view or a label feature
    (:func:`label_feature_names`: a field of a label view is a label under any view)."""
    views = {v.name: v for v in feature_views}
    labels = label_feature_names(feature_views)
    for fs in feature_services:
        if fs.name not in INPUT_SERVICES.values():
            continue
        for proj in fs.feature_view_projections:
            view = views.get(proj.name)
            if view is not None and _is_label_view(view):
                raise FeatureStoreError(
                    f"feature service {fs.name!r} includes label view {proj.name!r}; input services "
                    "must not contain labels. Fix feature_repo/ definitions"
                )
            bad = sorted({f.name for f in proj.features} & labels)
            if bad:
                raise FeatureStoreError(
                    f"feature service {fs.name!r} includes label feature(s) {bad} via view "
                    f"{proj.name!r}; input services must not contain labels. Fix feature_repo/"
                )


def check_feature_repo(settings: Settings) -> str:
    """Check the Feast repository without any network access (for ``eegfs doctor``).

    Returns a one-line description; raises :class:`FeatureStoreError` with a fix otherwise.
    """
    raw = _read_yaml(settings.feature_repo)
    objs = load_repo_objects(settings.feature_repo)
    names = {fs.name for fs in objs.feature_services}
    missing = sorted((set(INPUT_SERVICES.values()) | set(LABEL_SERVICES.values())) - names)
    if missing:
        raise FeatureStoreError(
            f"{settings.feature_repo}: feature service(s) {missing} are not defined; restore "
            "feature_repo/eeg_features.py from git"
        )
    check_label_exclusion(objs.feature_services, objs.feature_views)
    untagged = [s.name for s in objs.sources if "eegfs_table" not in (s.tags or {})]
    if untagged:
        raise FeatureStoreError(
            f"{settings.feature_repo}: source(s) {untagged} lack the 'eegfs_table' tag that places "
            "them under the features directory; add tags={{'eegfs_table': '<table>'}}"
        )
    reg = registry_path(settings)
    state = "applied" if reg.exists() else "not applied yet (run `eegfs features apply`)"
    return (
        f"Feast project {raw['project']!r}: {len(objs.feature_views)} views, "
        f"{len(objs.feature_services)} services; registry {state}"
    )


# --- value normalisation ----------------------------------------------------------------------
def _kind(dtype) -> str:
    """'f32', 'f64', 'str', 'list' (float32 arrays) or 'f64' for integers, from a Feast type."""
    from feast.types import Array, Float32, Float64, Int32, Int64, String

    if isinstance(dtype, Array):
        return "list"
    if dtype == Float32:
        return "f32"
    if dtype in (Float64, Int64, Int32):
        return "f64"
    if dtype == String:
        return "str"
    return "obj"


def _normalize_column(values, kind: str) -> np.ndarray:
    """Offline values as the client's dtypes: float32/float64 with NaN, or objects with NaN
    (never None); list cells as float32 arrays."""
    if kind in ("f32", "f64"):
        dt = np.float32 if kind == "f32" else np.float64
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            return values.astype(dt, copy=False)
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
            dtype=dt, na_value=np.nan
        )
    out = (
        np.array(values, dtype=object, copy=True)
        if not isinstance(values, np.ndarray)
        else values.astype(object)
    )
    missing = pd.isna(out)  # elementwise on objects: arrays count as present
    out[missing] = np.nan
    if kind == "list":
        for i in np.flatnonzero(~missing):
            v = out[i]
            if not (isinstance(v, np.ndarray) and v.dtype == np.float32):
                out[i] = np.asarray(v, dtype=np.float32)
    return out


def _from_value_proto(value, kind: str):
    """A Feast ``ValueProto`` as the client's normalised value (NaN when unset)."""
    if value is None:
        return np.nan
    field = value.WhichOneof("val")
    if field is None or field == "null_val":
        return np.nan
    if kind == "list":
        return np.asarray(getattr(value, field).val, dtype=np.float32)
    v = getattr(value, field)
    if kind in ("f32", "f64"):
        return float(v)
    return v


@dataclass(frozen=True)
class _ServiceInfo:
    name: str
    features: list[tuple[str, str, str]]  # (view, feature, kind)
    views: dict[str, Any]  # view name -> FeatureView

    @property
    def names(self) -> list[str]:
        return [f for _, f, _ in self.features]


# --- client -----------------------------------------------------------------------------------
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
        self._store = None
        self._redis = None
        self._project = str(_read_yaml(settings.feature_repo)["project"])
        self._cache: OrderedDict[tuple[str, str], tuple] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._marker_raw: bytes | None = None
        self._services: dict[str, _ServiceInfo] = {}
        # service -> (manifest.json (mtime_ns, size), matrix plan); dropped with _services
        self._plans: dict[str, tuple[tuple | None, list[tuple[str, tuple]]]] = {}
        self._offline_cache: dict[tuple, pd.DataFrame] = {}
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
        self._cache.clear()
        self._offline_cache.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise FeatureStoreError("this FeatureStoreClient is closed; create a new one")

    @property
    def redis(self):
        self._check_open()
        if self._redis is None:
            self._redis = redis_client(self.settings.redis_url)
        return self._redis

    @property
    def store(self):
        """The underlying ``feast.FeatureStore`` (created on first use)."""
        self._check_open()
        if self._store is None:
            from feast import FeatureStore

            self._store = FeatureStore(config=repo_config(self.settings))
        return self._store

    def _require_registry(self) -> None:
        if not registry_path(self.settings).exists():
            raise FeatureStoreError(
                f"no Feast registry at {registry_path(self.settings)}; run `eegfs features apply` "
                "(after `eegfs features build`)"
            )

    # --- apply / materialize --------------------------------------------------------------
    def apply(self) -> None:
        """Register the definitions of ``settings.feature_repo`` (idempotent).

        Source paths are re-based on ``settings.features_dir`` through their ``eegfs_table`` tag;
        objects removed from the repository are removed from the registry.
        """
        from feast.repo_contents import RepoContents
        from feast.repo_operations import extract_objects_for_apply_delete

        objs = load_repo_objects(self.settings.feature_repo)
        check_label_exclusion(objs.feature_services, objs.feature_views)
        base = Path(self.settings.features_dir).resolve()
        for src in objs.sources:
            table = (src.tags or {}).get("eegfs_table")
            if table:
                src.file_options.uri = str(base / table)
        registry_path(self.settings).parent.mkdir(parents=True, exist_ok=True)
        store = self.store
        repo = RepoContents(
            projects=[],
            data_sources=objs.sources,
            entities=objs.entities,
            feature_views=objs.feature_views,
            feature_services=objs.feature_services,
            on_demand_feature_views=[],
            stream_feature_views=[],
            label_views=[],
            permissions=[],
        )
        try:
            to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
                self._project, store.registry, repo
            )
            store.apply([*objs.sources, *to_apply], objects_to_delete=to_delete, partial=False)
            store.refresh_registry()
        except PipelineError:
            raise
        except Exception as exc:
            raise FeatureStoreError(f"feast apply failed: {exc!r}") from exc
        self._services.clear()
        self._plans.clear()
        self._offline_cache.clear()

    def _view_tables(self) -> dict[str, str]:
        """Feature view name -> table (relative to features_dir) of its source."""
        out = {}
        for view in self.store.list_feature_views():
            table = (view.batch_source.tags or {}).get("eegfs_table")
            if table:
                out[view.name] = table
        return out

    def materialize(self, end: datetime | None = None) -> None:
        """Load every snapshot not yet in Redis into the online store (up to ``end``, default now).

        Each view is materialized from the oldest new snapshot's ``event_timestamp``, so
        snapshots older than a TTL, or committed while an earlier materialization ran, are never
        skipped. Then writes the marker key that tells every client to drop its online cache.
        A snapshot whose commit a killed build left half done is completed first (Feast reads
        whole table directories), unless a build holds the lock: that build has done it.
        """
        self._require_registry()
        # Feast reads whole table directories: first complete a commit a killed build left half done
        ft.finish_interrupted_build(self.settings.features_dir)
        manifest = ft.Manifest.load(self.settings.features_dir)
        if not manifest.snapshots:
            raise FeatureStoreError(
                f"no feature snapshots under {self.settings.features_dir}; run `eegfs features build`"
            )
        end = (end or datetime.now(UTC)).astimezone(UTC)
        marker = self._read_marker() or {}
        done = set(marker.get("snapshot_ids", []))
        ready = {
            sid: s
            for sid, s in manifest.snapshots.items()
            if datetime.fromisoformat(s["event_timestamp"]) <= end
        }
        new = {sid: s for sid, s in ready.items() if sid not in done}
        store = self.store
        store.refresh_registry()
        for view, table in sorted(self._view_tables().items()):
            stamps = [
                datetime.fromisoformat(s["event_timestamp"])
                for s in new.values()
                if table in {str(Path(p).parent) for p in s.get("files", {}).values()}
            ]
            if not stamps:
                continue
            start = min(stamps) - timedelta(seconds=1)
            try:
                store.materialize(start_date=start, end_date=end, feature_views=[view])
            except Exception as exc:
                raise FeatureStoreError(
                    f"materializing view {view!r} from {start.isoformat()} to {end.isoformat()} "
                    f"failed: {exc!r}. Check that Redis answers at the configured REDIS_URL"
                ) from exc
        served = sorted(done | set(ready))
        value = {
            "store_snapshot_id": "fs_" + ft.short_hash(served),
            "snapshot_ids": served,
            "materialized_at": datetime.now(UTC).isoformat(),
            "end": end.isoformat(),
            "nonce": uuid.uuid4().hex,
        }
        try:
            self.redis.set(marker_key(self._project), json.dumps(value))
        except Exception as exc:
            raise FeatureStoreError(
                f"writing the materialization marker to Redis failed: {exc}"
            ) from exc
        self._check_marker()

    def _read_marker(self) -> dict | None:
        raw = self._get_marker_raw()
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def _get_marker_raw(self) -> bytes | None:
        try:
            return self.redis.get(marker_key(self._project))
        except Exception as exc:
            raise FeatureStoreError(
                f"Redis at the configured REDIS_URL does not answer: {exc}. Start it (eegfs services up)"
            ) from exc

    def _check_marker(self) -> None:
        """Drop the online cache and Feast's registry cache when a new materialization is seen."""
        raw = self._get_marker_raw()
        if raw != self._marker_raw:
            with self._lock:
                self._cache.clear()
                self._services.clear()
                self._plans.clear()
                if self._store is not None:
                    self._store.refresh_registry()
                self._marker_raw = raw

    def served_snapshot_id(self) -> str | None:
        """Id of the snapshot set the online store serves (latest materialization), or None."""
        marker = self._read_marker()
        return None if marker is None else marker.get("store_snapshot_id")

    def cache_info(self) -> dict:
        """Online cache statistics and the materialization marker it is valid for."""
        marker = None
        if self._marker_raw is not None:
            try:
                marker = json.loads(self._marker_raw).get("store_snapshot_id")
            except ValueError:
                marker = None
        return {
            "hits": self._hits,
            "misses": self._misses,
            "size": len(self._cache),
            "max_size": self.cache_size,
            "materialization": marker,
        }

    # --- service metadata -----------------------------------------------------------------
    def _service(self, service: str) -> _ServiceInfo:
        info = self._services.get(service)
        if info is not None:
            return info
        self._require_registry()
        store = self.store
        try:
            fs = store.get_feature_service(service, allow_cache=True)
        except Exception as exc:
            names = [s.name for s in store.list_feature_services()]
            raise FeatureStoreError(
                f"unknown feature service {service!r}; registered: {sorted(names)}"
            ) from exc
        feats, views = [], {}
        for proj in fs.feature_view_projections:
            view = store.get_feature_view(proj.name)
            views[proj.name] = view
            for f in proj.features:
                feats.append((proj.name, f.name, _kind(f.dtype)))
        info = _ServiceInfo(service, feats, views)
        self._services[service] = info
        return info

    def feature_names(self, service: str) -> list[str]:
        """Feature names of ``service`` in the column order of every result."""
        return self._service(service).names

    def matrix_columns(self, service: str) -> list[str]:
        """Column names of :meth:`get_online_matrix` / :meth:`get_historical_matrix`.

        Scalars keep their name, list features become ``name[channel]`` in the file's channel
        order, categoricals become ``<name>_code`` (sex: M=1, F=0, else NaN).
        """
        return [c for c, _ in self._matrix_plan(service)]

    def _matrix_plan(self, service: str) -> list[tuple[str, tuple]]:
        """Matrix columns of ``service`` and where each comes from.

        Cached per service: dropped when a new materialization or ``apply`` is seen (with the
        service metadata) and whenever manifest.json changes (its channel lists set the widths),
        so repeated online lookups do not re-read the manifest.
        """
        info = self._service(service)
        try:
            st = (self.settings.features_dir / ft.MANIFEST_NAME).stat()
            stamp: tuple | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        cached = self._plans.get(service)
        if cached is not None and cached[0] == stamp and stamp is not None:
            return cached[1]
        plan = self._build_matrix_plan(info)
        self._plans[service] = (stamp, plan)
        return plan

    def _build_matrix_plan(self, info: _ServiceInfo) -> list[tuple[str, tuple]]:
        manifest = ft.Manifest.load(self.settings.features_dir)
        plan: list[tuple[str, tuple]] = []
        for view, feat, kind in info.features:
            if kind == "list":
                table = (info.views[view].batch_source.tags or {}).get("eegfs_table", "")
                key = Path(table).name
                channels = manifest.channels.get(key)
                if channels is None:
                    raise FeatureStoreError(
                        f"list feature {feat!r} of view {view!r}: no {key} features were built, so "
                        "its channel count is unknown; run `eegfs features build` with such files"
                    )
                plan += [(f"{feat}[{ch}]", ("list", feat, i)) for i, ch in enumerate(channels)]
            elif feat in CATEGORICAL_CODES:
                plan.append((f"{feat}_code", ("cat", feat, 0)))
            elif kind in ("f32", "f64"):
                plan.append((feat, ("num", feat, 0)))
            else:
                raise FeatureStoreError(f"feature {feat!r} ({kind}) has no numeric encoding")
        return plan

    def _to_matrix(self, df: pd.DataFrame, service: str) -> tuple[np.ndarray, list[str]]:
        plan = self._matrix_plan(service)

        def column(feat: str, kind: str):
            if kind == "num":
                return df[feat].to_numpy(dtype=np.float32, na_value=np.nan)
            return df[feat].to_numpy()

        return _fill_matrix(plan, len(df), column), [c for c, _ in plan]

    # --- online ---------------------------------------------------------------------------
    def get_online_features(self, subject_ids: Sequence[str], service: str) -> pd.DataFrame:
        """Online features of ``service`` for ``subject_ids`` (from Redis, through the cache).

        Returns one row per requested id in order (duplicates allowed), ids normalised, columns
        ``subject_id`` + :meth:`feature_names`; NaN where missing.
        """
        ids, info, ordered = self._online_rows(subject_ids, service)
        data: dict[str, Any] = {ENTITY_KEY: ids}
        for j, (_, feat, kind) in enumerate(info.features):
            if kind in ("f32", "f64"):
                data[feat] = np.array(
                    [r[j] for r in ordered], dtype=np.float32 if kind == "f32" else np.float64
                )
            else:
                col = np.empty(len(ordered), dtype=object)
                for i, r in enumerate(ordered):
                    col[i] = r[j]
                data[feat] = col
        return pd.DataFrame(data, copy=False)

    def _online_rows(
        self, subject_ids: Sequence[str], service: str
    ) -> tuple[list[str], _ServiceInfo, list[tuple]]:
        """(normalised ids, service info, one row of normalised values per id) via the cache."""
        self._check_open()
        ids = normalize_subject_ids(subject_ids)
        self._check_marker()
        info = self._service(service)
        rows: dict[str, tuple] = {}
        wanted = []
        with self._lock:
            for sid in dict.fromkeys(ids):
                hit = self._cache.get((service, sid)) if self.cache_size else None
                if hit is not None:
                    self._cache.move_to_end((service, sid))
                    rows[sid] = hit
                    self._hits += 1
                else:
                    wanted.append(sid)
                    self._misses += 1
        if wanted:
            fetched = self._read_online(wanted, info)
            rows.update(fetched)
            if self.cache_size:
                with self._lock:
                    for sid, row in fetched.items():
                        self._cache[(service, sid)] = row
                        self._cache.move_to_end((service, sid))
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return ids, info, [rows[s] for s in ids]

    def _read_online(self, ids: list[str], info: _ServiceInfo) -> dict[str, tuple]:
        """Rows of normalised values (see :func:`_from_value_proto`) for ``ids`` from Redis.

        Uses the online store's ``online_read`` (one pipelined HMGET per view, Feast's key and
        field encoding) and decodes the protobuf values directly: the same data as
        ``FeatureStore.get_online_features`` without its per-call registry and type-mapping cost.
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        store = self.store
        keys = [EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=s)]) for s in ids]
        by_view: dict[str, list[tuple[int, str, str]]] = {}
        for j, (view, feat, kind) in enumerate(info.features):
            by_view.setdefault(view, []).append((j, feat, kind))
        rows = [[np.nan] * len(info.features) for _ in ids]
        try:
            online = store._get_provider().online_store
            for view, feats in by_view.items():
                result = online.online_read(
                    config=store.config,
                    table=info.views[view],
                    entity_keys=keys,
                    requested_features=[f for _, f, _ in feats],
                )
                for row, (_, values) in zip(rows, result, strict=True):
                    if not values:
                        continue
                    for j, feat, kind in feats:
                        row[j] = _from_value_proto(values.get(feat), kind)
        except PipelineError:
            raise
        except Exception as exc:
            raise FeatureStoreError(
                f"online read of {info.name!r} for {len(ids)} subject(s) failed: {exc!r}. Check "
                "that Redis answers at REDIS_URL and that `eegfs features apply` ran"
            ) from exc
        return {sid: tuple(row) for sid, row in zip(ids, rows, strict=True)}

    def get_online_matrix(
        self, subject_ids: Sequence[str], service: str
    ) -> tuple[np.ndarray, list[str]]:
        """``(X, columns)``: float32 (n, d) matrix of :meth:`get_online_features` (NaN missing).

        Built straight from the cached rows (the same conversions as for a DataFrame, without
        building one).
        """
        _, info, ordered = self._online_rows(subject_ids, service)
        plan = self._matrix_plan(service)
        col_of = {feat: j for j, (_, feat, _) in enumerate(info.features)}
        kinds = {feat: kind for _, feat, kind in info.features}

        def column(feat: str, kind: str):
            values = [r[col_of[feat]] for r in ordered]
            if kind == "num":  # via the dtype the DataFrame holds, so both paths round alike
                return np.array(values, dtype=np.float32 if kinds[feat] == "f32" else np.float64)
            return values

        return _fill_matrix(plan, len(ordered), column), [c for c, _ in plan]

    # --- historical -----------------------------------------------------------------------
    def _offline_table(self, table: str, columns: list[str]) -> pd.DataFrame:
        manifest = ft.Manifest.load(self.settings.features_dir)
        files = _table_files(manifest, table)
        key = (
            table,
            tuple(columns),
            tuple((str(p), p.stat().st_mtime_ns) for p in files if p.exists()),
        )
        cached = self._offline_cache.get(key)
        if cached is not None:
            return cached
        tbl = ft.read_tables(files, columns=[ENTITY_KEY, "event_timestamp", "created", *columns])
        if tbl is None:
            df = pd.DataFrame(columns=[ENTITY_KEY, "event_timestamp", "created", *columns])
        else:
            df = tbl.to_pandas(types_mapper=None)
        for k in [k for k in self._offline_cache if k[0] == table and k[1] == tuple(columns)]:
            del self._offline_cache[k]
        self._offline_cache[key] = df
        return df

    def get_historical_features(self, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
        """Point-in-time correct features of ``service`` for each row of ``entity_df``.

        Parameters
        ----------
        entity_df : DataFrame
            Columns ``subject_id`` and ``event_timestamp`` (tz-aware; naive is taken as UTC).

        Returns
        -------
        DataFrame
            Exactly one row per entity row, same order, columns ``subject_id``,
            ``event_timestamp`` (UTC) + :meth:`feature_names`; NaN where no value existed at that
            time (see :mod:`pipelines.pit`).
        """
        self._check_open()
        for col in (ENTITY_KEY, "event_timestamp"):
            if col not in entity_df.columns:
                raise ValueError(
                    f"entity_df needs columns subject_id and event_timestamp, missing {col!r} "
                    f"(has {list(entity_df.columns)})"
                )
        info = self._service(service)
        codes, uniques = pd.factorize(entity_df[ENTITY_KEY].astype(str), use_na_sentinel=False)
        canon = np.array([normalize_subject_id(u) for u in uniques], dtype=object)
        ents = pd.DataFrame(
            {
                ENTITY_KEY: canon[codes] if len(codes) else np.array([], dtype=object),
                # naive UTC datetime64[ns] inside; the result gets its UTC zone back at the end
                "event_timestamp": normalize_entity_timestamps(entity_df["event_timestamp"])
                .dt.tz_localize(None)
                .to_numpy(),
            }
        )
        out: dict[str, Any] = {
            ENTITY_KEY: ents[ENTITY_KEY].to_numpy(),
            "event_timestamp": ents["event_timestamp"].to_numpy(),
        }
        by_view: dict[str, list[tuple[str, str]]] = {}
        for view, feat, kind in info.features:
            by_view.setdefault(view, []).append((feat, kind))
        for view, feats in by_view.items():
            fv = info.views[view]
            table = (fv.batch_source.tags or {}).get("eegfs_table")
            if not table:
                raise FeatureStoreError(f"view {view!r}: its source has no 'eegfs_table' tag")
            cols = [f for f, _ in feats]
            src = self._offline_table(table, cols)
            joined = point_in_time_join(ents, src, cols, ttl=fv.ttl)
            for f, kind in feats:
                out[f] = _normalize_column(joined[f].to_numpy(), kind)
        result = pd.DataFrame(out, copy=False)
        result["event_timestamp"] = result["event_timestamp"].dt.tz_localize("UTC")
        return result[[ENTITY_KEY, "event_timestamp", *info.names]]

    def get_historical_matrix(
        self, entity_df: pd.DataFrame, service: str
    ) -> tuple[np.ndarray, list[str]]:
        """``(X, columns)``: float32 matrix of :meth:`get_historical_features` (NaN missing)."""
        return self._to_matrix(self.get_historical_features(entity_df, service), service)


def _fill_matrix(
    plan: list[tuple[str, tuple]], n: int, column: Callable[[str, str], Any]
) -> np.ndarray:
    """The float32 (n, len(plan)) matrix of a matrix plan (NaN where missing).

    ``column(feat, kind)`` gives feature ``feat``'s n values: numbers for ``num``; strings or
    NaN for ``cat`` (coded by :data:`CATEGORICAL_CODES`, anything else NaN); float32 arrays of
    one value per channel, or NaN, for ``list`` (spread over that many columns).
    """
    out = np.full((n, len(plan)), np.nan, np.float32)
    j = 0
    while j < len(plan):
        _, (kind, feat, _) = plan[j]
        values = column(feat, kind)
        if kind == "num":
            out[:, j] = values
            j += 1
        elif kind == "cat":
            codes = CATEGORICAL_CODES[feat]
            out[:, j] = [
                codes.get(v.strip().upper(), np.nan) if isinstance(v, str) else np.nan
                for v in values
            ]
            j += 1
        else:
            width = sum(1 for _, (k, f, _) in plan[j:] if k == "list" and f == feat)
            for i, v in enumerate(values):
                if isinstance(v, np.ndarray):
                    if v.shape != (width,):
                        raise FeatureStoreError(
                            f"feature {feat!r} holds {v.shape[0]} values, expected {width} channels"
                        )
                    out[i, j : j + width] = v
            j += width
    return out


def _table_files(manifest: ft.Manifest, table: str) -> list[Path]:
    """Committed files of ``table`` (e.g. ``subject_features/challenge2``), oldest first."""
    rows = []
    for snap in manifest.snapshots.values():
        for rel in snap.get("files", {}).values():
            if str(Path(rel).parent) == table:
                rows.append(
                    (
                        snap["event_timestamp"],
                        snap["snapshot_id"],
                        Path(manifest.features_dir) / rel,
                    )
                )
    return [p for *_, p in sorted(rows)]


def shell_environment(settings: Settings) -> dict[str, str]:
    """Variables the plain Feast CLI needs in ``feature_repo/`` (``eegfs features env``)."""
    return {"EEGFS_FEAST_REDIS": feast_redis_connection_string(settings.redis_url)}


__all__ = [
    "CATEGORICAL_CODES",
    "apply_feature_repo",
    "materialize_features",
    "online_features_record",
    "INPUT_SERVICES",
    "LABEL_FEATURES",
    "LABEL_ROLE",
    "LABEL_SERVICES",
    "ROLE_TAG",
    "FeatureStoreClient",
    "check_feature_repo",
    "check_label_exclusion",
    "label_feature_names",
    "load_repo_objects",
    "marker_key",
    "registry_path",
    "repo_config",
    "shell_environment",
]


# --- one-call helpers for the commands --------------------------------------------------------
def apply_feature_repo(settings: Settings) -> str:
    """``eegfs features apply``: register the definitions; returns a one-line summary."""
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.apply()
        store = client.store
        return (
            f"applied project {client._project!r}: {len(store.list_feature_views())} feature views, "
            f"{len(store.list_feature_services())} feature services; registry {registry_path(settings)}"
        )


def materialize_features(settings: Settings, end: datetime | None = None) -> str:
    """``eegfs features materialize``: load new snapshots into Redis; returns a summary."""
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.materialize(end)
        return f"online store serves {client.served_snapshot_id()} (Redis {mask_uri(settings.redis_url)})"


def _json_value(v):
    if isinstance(v, np.ndarray):
        return [None if not np.isfinite(x) else float(x) for x in v]
    if isinstance(v, float | np.floating):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def online_features_record(
    settings: Settings, subject_ids: Sequence[str], services: Sequence[str] | None = None
) -> list[dict]:
    """``eegfs features get``: per subject, its online features per service (JSON-able, NaN ->
    None) and the served snapshot id."""
    services = list(services or INPUT_SERVICES.values())
    with FeatureStoreClient(settings, cache_size=0) as client:
        served = client.served_snapshot_id()
        if served is None:
            raise FeatureStoreError(
                "the online store holds no materialization; run `eegfs features materialize`"
            )
        frames = {s: client.get_online_features(subject_ids, s) for s in services}
    out = []
    for i, sid in enumerate(normalize_subject_ids(subject_ids)):
        rec: dict[str, Any] = {"subject_id": sid, "served_snapshot_id": served, "features": {}}
        for s, df in frames.items():
            row = df.iloc[i]
            rec["features"][s] = {c: _json_value(row[c]) for c in df.columns if c != ENTITY_KEY}
        out.append(rec)
    return out
