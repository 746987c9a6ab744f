"""Redis passwords with characters that Feast's connection string cannot carry, end to end against
real servers started with ``--requirepass``: apply, materialize, online reads, live metrics, and
``eegfs features env`` (which alone may refuse them, without printing them)."""

from __future__ import annotations

import json
import shutil
import time
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from features_testlib import assert_same_frames, module_settings, write_h5, write_participants

from eegfs.cli import cli
from featurestore import feast_adapter
from featurestore.client import FeatureStoreClient
from featurestore.errors import FeatureStoreError
from featurestore.labels import INPUT_SERVICES
from featurestore.shell_env import FEAST_REDIS_VAR
from pipelines.build import BuildOptions, build_features
from services.connections import redis_client
from training.live import LivePublisher, state_key

SUBJECTS = ["NDARAA000001", "NDARAA000002"]
#: password -> what `eegfs features env` must say about it (None: it exports a working value).
PASSWORDS = {
    "a,b": "contains ','",
    "a=b": None,
    "p@ss": None,
    "a:b": None,
    "a/b": None,
    "100%": None,
    "pass word": None,
    "x: y": "contains ':'",
    "123": "reads as JSON",
    "null": "reads as JSON",
    "true": "reads as JSON",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Features of two tiny files, built once; each test copies them."""
    tmp = tmp_path_factory.mktemp("passwords")
    c2 = write_h5(tmp / "in" / "c2.h5", subjects=SUBJECTS, windows_per_subject=2, seed=3)
    tsv = write_participants(tmp / "in" / "participants.tsv", SUBJECTS)
    features = tmp / "data" / "features"
    build_features(features, [c2.path], tsv, BuildOptions(progress=False))
    return features


def _settings(built, tmp_path, url):
    settings = module_settings(tmp_path / "data", url)
    shutil.copytree(built, settings.features_dir)
    return settings


def _feast_env_output(url: str):
    return CliRunner().invoke(cli, ["features", "env"], env={"REDIS_URL": url})


@pytest.mark.parametrize("password", list(PASSWORDS))
def test_any_password_works_end_to_end(password, built, tmp_path, start_local_redis):
    server = start_local_redis(password=password)
    assert f":{quote(password, safe='')}@" in server.uri
    settings = _settings(built, tmp_path, server.uri)
    service = INPUT_SERVICES[2]
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.apply()
        client.materialize()
        ours = client.get_online_features(SUBJECTS, service)
        theirs = client.store.get_online_features(
            features=client.store.get_feature_service(service),
            entity_rows=[{"subject_id": s} for s in SUBJECTS],
        ).to_dict()
        assert ours["rel_mean_alpha"].notna().all()
        assert ours["rel_mean_alpha"].tolist() == pytest.approx(theirs["rel_mean_alpha"])
        assert client.served_snapshot_id() is not None

    # live training metrics through the same URL
    with LivePublisher(server.uri, "exp-pw", timeout_s=2.0) as live:
        assert live.publish("epoch", epoch=1, step=3, loss=0.5)
        deadline = time.monotonic() + 10
        while live.sent < 1 and live.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.sent == 1 and live.errors == 0, live.stats()
    reader = redis_client(server.uri)
    try:
        assert json.loads(reader.hget(state_key("exp-pw"), "last"))["loss"] == 0.5
    finally:
        reader.close()

    # only the plain-feast-CLI exports may refuse it, with the reason and without the password
    result = _feast_env_output(server.uri)
    refusal = PASSWORDS[password]
    if refusal is None:
        assert result.exit_code == 0, result.output
        exported = result.output.split(f"export {FEAST_REDIS_VAR}=", 1)[1].strip()
        value = exported.strip("'") if exported.startswith("'") else exported
        _, params = feast_adapter.parse_connection_string(value)
        assert params["password"] == password
    else:
        assert result.exit_code != 0 and refusal in result.output, result.output
        assert password not in result.output.replace(refusal, "")
        assert "Traceback" not in result.output


@pytest.mark.parametrize("wrong", [None, "not-it"])
def test_authentication_failures_say_so(wrong, built, tmp_path, start_local_redis):
    server = start_local_redis(password="s3cret,=")
    url = server.uri.replace(
        f":{quote('s3cret,=', safe='')}@", "" if wrong is None else f":{wrong}@"
    )
    settings = _settings(built, tmp_path, url)
    right = settings.with_overrides(redis_url=server.uri)
    with FeatureStoreClient(right, cache_size=0) as client:
        client.apply()  # (Feast's apply of new definitions writes nothing to Redis)
    calls = {
        "materialize": lambda c: c.materialize(),
        "marker": lambda c: c.served_snapshot_id(),
        "online read": lambda c: c.get_online_features(SUBJECTS, INPUT_SERVICES[2]),
    }
    with FeatureStoreClient(settings, cache_size=0) as client:
        for name, call in calls.items():
            with pytest.raises(FeatureStoreError, match="authentication failed") as info:
                call(client)
            message = str(info.value)
            assert "does not answer" not in message and "s3cret" not in message, name
            assert wrong is None or wrong not in message, name
        with FeatureStoreClient(right, cache_size=0) as ok:
            ok.materialize()
        with pytest.raises(FeatureStoreError, match="online read .* authentication failed"):
            client.online._fetch(client.service_info(INPUT_SERVICES[2]), SUBJECTS)


def test_a_user_without_scripting_reads_through_a_pipeline(built, tmp_path, start_local_redis):
    """A Redis user that may not run scripts (ACL -@scripting) gets the same online values."""
    server = start_local_redis(password="admin pw")
    settings = _settings(built, tmp_path, server.uri)
    admin = redis_client(server.uri)
    admin.acl_setuser(
        "reader",
        enabled=True,
        passwords=["+read:er"],
        keys=["*"],
        commands=["+@all", "-@scripting"],
    )
    admin.close()
    reader_url = server.uri.replace(
        f":{quote('admin pw', safe='')}@", f"reader:{quote('read:er', safe='')}@"
    )
    service = INPUT_SERVICES[2]
    with FeatureStoreClient(settings, cache_size=0) as client:
        client.apply()
        client.materialize()
        want = client.get_online_features([*SUBJECTS, "NDARNOBODY"], service)
    with FeatureStoreClient(settings.with_overrides(redis_url=reader_url), cache_size=0) as reader:
        for _ in range(2):  # refused once, then straight to the pipeline
            assert_same_frames(reader.get_online_features([*SUBJECTS, "NDARNOBODY"], service), want)
        assert reader.online._script is None
