"""What featurestore.feast_adapter relies on in Feast (0.67), pinned: a Feast upgrade that changes
any of it fails here first. And no module but the adapter touches Feast's private API."""

from __future__ import annotations

import ast
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feast
import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Null, Value
from features_testlib import module_settings, write_h5, write_participants

from featurestore import feast_adapter as fa
from featurestore.client import FeatureStoreClient
from featurestore.connection import open_redis
from featurestore.labels import INPUT_SERVICES, LABEL_SERVICES
from featurestore.materialize import apply_repo
from featurestore.repo import ENTITY_KEY, load_repo_objects, open_feature_store, registry_path
from pipelines.build import BuildOptions, build_features
from services.local import free_port

ROOT = Path(__file__).resolve().parents[2]
SUBJECTS = ["NDARAA000001", "NDARAA000002", "NDARAA000003"]
ALL_SERVICES = [*INPUT_SERVICES.values(), *LABEL_SERVICES.values()]


@pytest.fixture(scope="module")
def small_store(private_redis, tmp_path_factory):
    """Applied and materialized store of two tiny files (the second subject's age is n/a)."""
    tmp = tmp_path_factory.mktemp("adapter")
    c2 = write_h5(tmp / "in" / "c2.h5", subjects=SUBJECTS[:2], seed=1)
    c1 = write_h5(tmp / "in" / "c1.h5", layout="challenge1", subjects=SUBJECTS, seed=2)
    tsv = write_participants(tmp / "in" / "participants.tsv", SUBJECTS)
    settings = module_settings(tmp / "data", private_redis)
    build_features(settings.features_dir, [c2.path, c1.path], tsv, BuildOptions(progress=False))
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.apply()
        client.materialize()
    return settings


def test_feast_version_is_the_pinned_one():
    assert feast.__version__.startswith("0.67."), "re-check feast_adapter.py, then this pin"


# --- Value wire encoding ----------------------------------------------------------------------
def test_value_tags_are_the_ones_decoded_in_bulk():
    assert Value(float_val=1.5).SerializeToString()[0] == fa.FLOAT_TAG
    assert Value(double_val=1.5).SerializeToString()[0] == fa.DOUBLE_TAG
    assert Value(int64_val=3).SerializeToString()[0] == fa.INT64_TAG
    assert Value(int32_val=3).SerializeToString()[0] == fa.INT32_TAG
    assert Value(string_val="M").SerializeToString() == bytes([fa.STRING_TAG, 1]) + b"M"
    raw = Value(float_list_val=FloatList(val=[1.0, 2.0])).SerializeToString()
    assert raw.startswith(fa.FLOAT_LIST_TAG) and raw[3] == fa.FLOAT_LIST_VALUES_TAG
    # a set oneof member is written even when it is the default (0.0 is not "missing")
    assert len(Value(float_val=0.0).SerializeToString()) == 5


def _protobuf_value(raw: bytes | None, kind: str):
    """Reference decoding: protobuf, one message at a time."""
    if not raw:
        return math.nan
    value = Value.FromString(raw)
    member = value.WhichOneof("val")
    if member in (None, "null_val"):
        return math.nan
    got = getattr(value, member)
    if kind == "list":
        return np.asarray(got.val, dtype=np.float32)
    return float(got) if kind in ("f32", "f64") else got


def _column_values(kind: str, rng: np.random.Generator) -> list[bytes | None]:
    null = Value(null_val=Null.NULL).SerializeToString()
    common = [None, b"", null, Value().SerializeToString()]
    if kind == "f32":
        floats = [0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, 3.4e38, 1e-45, -7.25]
        values = [Value(float_val=x) for x in floats]
        values += [Value(double_val=2.5), Value(int64_val=7), Value(bool_val=True)]
    elif kind == "f64":
        ints = [0, 1, 127, 128, 16383, 16384, 2**53 + 1, -1, -(2**63), 2**63 - 1]
        values = [Value(int64_val=i) for i in ints]
        values += [Value(int32_val=i) for i in (-1, -(2**31), 2**31 - 1, 5)]
        values += [Value(double_val=x) for x in (0.1, -0.0, math.nan, 1e308)]
        values += [Value(float_val=0.1)]
    elif kind == "str":
        values = [Value(string_val=s) for s in ("", "M", "F", "\u00e9", "x" * 127, "x" * 300)]
    else:
        sizes = [0, 1, 129, 129, 129, 33, 1000]
        values = [Value(float_list_val=FloatList(val=rng.normal(size=n))) for n in sizes]
        values += [Value(float_list_val=FloatList(val=[math.nan, math.inf, -0.0]))]
        values += [Value(double_list_val=DoubleList(val=[0.1, 0.2]))]
    return common + [v.SerializeToString() for v in values]


def test_bulk_decoding_equals_protobuf_parsing_for_every_kind():
    rng = np.random.default_rng(0)
    kinds = ["f32", "list", "f64", "str", "f32", "list"]
    columns = [_column_values(kind, rng) for kind in kinds]
    n = max(len(c) for c in columns)
    for c in columns:
        c += [None] * (n - len(c))
        rng.shuffle(c)
    rows = [[c[i] for c in columns] for i in range(n)]
    numbers, objects = fa.decode_rows(rows, kinds)
    assert numbers.shape == objects.shape == (n, len(kinds)) and numbers.dtype == np.float64
    for j, kind in enumerate(kinds):
        for i in range(n):
            want = _protobuf_value(rows[i][j], kind)
            got = numbers[i, j] if kind in ("f32", "f64") else objects[i, j]
            if isinstance(want, np.ndarray):
                assert isinstance(got, np.ndarray) and got.dtype == np.float32, (i, j)
                np.testing.assert_array_equal(got, want)
                assert (np.signbit(got) == np.signbit(want)).all()
            elif isinstance(want, float) and math.isnan(want):
                assert isinstance(got, float) and math.isnan(got), (i, j, got)
            else:
                assert got == want, (i, j, got, want)
                assert kind in ("f32", "f64") or type(got) is type(want), (i, j, got, want)
                if isinstance(want, float):
                    assert math.copysign(1, got) == math.copysign(1, want)
    # the other block's cells are NaN
    assert np.isnan(numbers[:, [1, 3, 5]]).all()
    assert all(isinstance(v, float) and math.isnan(v) for v in objects[:, [0, 2, 4]].ravel())


def test_decoding_nothing_and_a_wrong_row_width():
    numbers, objects = fa.decode_rows([], ["f32", "str"])
    assert numbers.shape == objects.shape == (0, 2)
    with pytest.raises(ValueError, match="expected 1 rows of 2 values"):
        fa.decode_rows([[None]], ["f32", "str"])


# --- Redis layout of online rows --------------------------------------------------------------
def test_entity_keys_are_feasts_encoding_plus_the_project(small_store):
    with FeatureStoreClient(small_store) as client:
        store = client.store
        info = client.service_info(INPUT_SERVICES[2])
        ids = [*SUBJECTS, "NDARNOBODY", "X", "NDAR" + "Z" * 300]
        want = [
            serialize_entity_key(
                EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=s)]),
                entity_key_serialization_version=store.config.entity_key_serialization_version,
            )
            + store.config.project.encode()
            for s in ids
        ]
        assert info.layout.keys(ids) == want
        assert info.layout.fields == [_mmh3(f"{view}:{feat}") for view, feat, _ in info.features]


def test_layout_and_decoding_give_what_feasts_online_read_gives(small_store):
    """The raw hash fields at the layout's keys, decoded in bulk, are the values Feast's own
    online_read returns for every view of every service (missing and unknown ids included)."""
    ids = [*SUBJECTS, "NDARNOBODY"]
    with FeatureStoreClient(small_store, cache_size=0) as client:
        store, redis = client.store, client.redis
        online = store.provider.online_store
        keys = [EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=s)]) for s in ids]
        missing = 0
        for service in ALL_SERVICES:
            info = client.service_info(service)
            replies = [redis.hmget(k, info.layout.fields) for k in info.layout.keys(ids)]
            numbers, objects = fa.decode_rows(replies, info.kinds)
            for j, (view, feat, kind) in enumerate(info.features):
                rows = online.online_read(store.config, info.views[view], keys, [feat])
                for i, (_, values) in enumerate(rows):
                    proto = (values or {}).get(feat)
                    raw = None if proto is None else proto.SerializeToString()
                    assert raw == (replies[i][j] or b"")  # missing: None in Redis, b"" in Feast
                    want = _protobuf_value(raw, kind)
                    got = numbers[i, j] if kind in ("f32", "f64") else objects[i, j]
                    if isinstance(want, np.ndarray):
                        np.testing.assert_array_equal(got, want)
                    elif isinstance(want, float) and math.isnan(want):
                        missing += 1
                        assert math.isnan(got)
                    else:
                        assert got == want
        assert missing > 0  # unknown id, a subject without C2 windows, an n/a age


def test_the_attached_client_serves_every_synchronous_path(small_store, private_redis):
    """Feast's configured address goes nowhere; apply, materialize and reads still work, so every
    path uses the client the adapter attached."""
    from featurestore.repo import read_repo_yaml

    nowhere = small_store.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/5")
    live = open_redis(private_redis.replace("/0", "/5"))
    live.flushdb()
    try:
        store = open_feature_store(nowhere, live)
        assert store.provider.online_store._client is live
        apply_repo(store, nowhere, read_repo_yaml(nowhere.feature_repo)["project"])
        now = datetime.now(UTC)
        store.materialize(now - timedelta(days=1), now + timedelta(seconds=5))
        df = store.get_online_features(
            features=store.get_feature_service(INPUT_SERVICES[1]),
            entity_rows=[{ENTITY_KEY: s} for s in SUBJECTS],
        ).to_df()
        assert df["rel_mean_alpha"].notna().all() and live.dbsize() > 0
    finally:
        live.flushdb()
        live.close()


def test_connection_string_parsing_that_the_shell_checks_rely_on():
    nodes, params = fa.parse_connection_string("h:6379,db=2,password=a=b,ssl=true")
    assert nodes == [{"host": "h", "port": "6379"}]
    assert params == {"db": 2, "password": "a=b", "ssl": True}
    assert fa.parse_connection_string("h:1,password=a,b")[1]["password"] == "a"  # split on ","
    assert fa.parse_connection_string("h:1,password=123")[1]["password"] == 123  # JSON-decoded
    assert fa.parse_connection_string("h:1,password=null")[1]["password"] is None
    assert fa.parse_connection_string("h:1,password=p@ss:w/rd%")[1]["password"] == "p@ss:w/rd%"


def test_plan_apply_adds_new_objects_and_removes_dropped_ones(settings):
    registry_path(settings).parent.mkdir(parents=True)
    with FeatureStoreClient(settings, cache_size=0) as client:
        objs = load_repo_objects(settings.feature_repo)
        to_apply, to_delete = fa.plan_apply(client.store, client.project, objs)
        names = {o.name for o in to_apply}
        assert {v.name for v in objs.feature_views} <= names and not to_delete
        client.apply()
        objs.feature_services = [s for s in objs.feature_services if s.name != LABEL_SERVICES[1]]
        to_apply, to_delete = fa.plan_apply(client.store, client.project, objs)
        # Feast also lists its project and dummy entity (its apply keeps them); no view goes
        dropped = {type(o).__name__: o.name for o in to_delete if not o.name.startswith("__")}
        assert dropped.get("FeatureService") == LABEL_SERVICES[1] and "FeatureView" not in dropped
        client.store.apply([*objs.sources, *to_apply], objects_to_delete=to_delete, partial=False)
        registered = {s.name for s in client.store.list_feature_services()}
        assert registered == set(ALL_SERVICES) - {LABEL_SERVICES[1]}


# --- no other module touches Feast's private API ----------------------------------------------
#: Feast modules that are internals, not API (imports of them belong in the adapter).
UNSTABLE_MODULES = ("feast.infra", "feast.protos", "feast.repo_operations", "feast.repo_contents")
#: Attribute names that only Feast's internals have.
PRIVATE_ATTRIBUTES = {
    name
    for cls in (feast.FeatureStore, RedisOnlineStore)
    for name in dir(cls)
    if name.startswith("_") and not name.startswith("__")
}
ALLOWED = {Path("featurestore/feast_adapter.py"), Path("tests/features/test_feast_adapter.py")}


def _feast_private_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("feast"):
            module = node.module or ""
            if module.startswith(UNSTABLE_MODULES) or any(
                part.startswith("_") for part in module.split(".")
            ):
                found.append(f"line {node.lineno}: from {module} import ...")
            found += [
                f"line {node.lineno}: import of {a.name} from {module}"
                for a in node.names
                if a.name.startswith("_")
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith(UNSTABLE_MODULES)
            ]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in PRIVATE_ATTRIBUTES
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_no_module_but_the_adapter_uses_feasts_private_api():
    assert {"_get_provider", "_client", "_parse_connection_string"} <= PRIVATE_ATTRIBUTES
    offenders = {}
    files = [
        p
        for p in ROOT.rglob("*.py")
        if not {".venv", "data", ".git", "build"} & set(p.relative_to(ROOT).parts)
    ]
    assert len(files) > 50 and Path("featurestore/client.py") in {
        p.relative_to(ROOT) for p in files
    }
    for path in files:
        rel = path.relative_to(ROOT)
        if rel in ALLOWED:
            continue
        uses = _feast_private_uses(ast.parse(path.read_text(), filename=str(path)))
        if uses:
            offenders[str(rel)] = uses
    assert not offenders, f"Feast private API outside featurestore/feast_adapter.py: {offenders}"
    # the scan finds what it looks for
    adapter = (ROOT / "featurestore" / "feast_adapter.py").read_text()
    assert _feast_private_uses(ast.parse(adapter))
