"""Every page under Streamlit's AppTest, with an empty database and with the demo run: no
exception, no error element, and the expected content. Also: while every page renders, the app
sends MongoDB no write command and Redis no write command."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from pymongo import monitoring
from streamlit.testing.v1 import AppTest

from services.connections import redis_client

MAIN = Path(__file__).resolve().parents[2] / "dashboard" / "app" / "main.py"
PAGES = (
    "runs_page.py",
    "run_page.py",
    "compare_page.py",
    "models_page.py",
    "features_page.py",
    "services_page.py",
)
#: AppTest's per-run timeout (the shared 2-core machine is slow; a page takes well under 1 s).
TIMEOUT_S = 120


def _point_at(monkeypatch, env) -> None:
    for key, value in env.environ.items():
        monkeypatch.setenv(key, value)


def _texts(at: AppTest) -> str:
    """Every text the page shows (markdown, captions, titles, metrics, infos, tables' cells)."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "success", "warning", "code"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    for frame in at.dataframe:
        parts.append(frame.value.to_string())
    return "\n".join(parts)


def _render(page: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    return at


def _assert_clean(at: AppTest, page: str) -> None:
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert not at.error, f"{page}: {[e.value for e in at.error]}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_database(page, empty_env, monkeypatch):
    _point_at(monkeypatch, empty_env)
    at = _render(page)
    _assert_clean(at, page)
    text = _texts(at)
    expected = {
        "runs_page.py": "No runs recorded yet",
        "run_page.py": "No runs recorded yet",
        "compare_page.py": "Choose at least 2 runs",
        "models_page.py": "No registered model yet",
        "features_page.py": "No feature snapshot under",
        "services_page.py": "every tracking write reached MongoDB",
    }[page]
    assert expected in text, text


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_demo_run(page, demo_env, monkeypatch):
    _point_at(monkeypatch, demo_env)
    at = _render(page)
    _assert_clean(at, page)
    text = _texts(at)
    run_name, run_id = demo_env.run_name, demo_env.run_id
    if page == "runs_page.py":
        assert run_name in text and run_id in text and "completed" in text
    elif page == "run_page.py":
        assert run_name in text and "completed" in text
        assert "best val NRMSE" in text
        assert len(at.get("plotly_chart")) >= 2  # epoch curves and step curves
    elif page == "compare_page.py":
        # a single run: the page asks for a second one
        assert "Choose at least 2 runs" in text
    elif page == "models_page.py":
        assert "demo-model" in text and "candidate" in text and run_id in text
        assert "eegfs models alias demo-model production 1" in text
    elif page == "features_page.py":
        assert "Redis serves `fs_" in text and "challenge2_" in text
        assert "Drift between releases" in text and "Window quality" in text
    else:
        assert "Redis" in text and "MongoDB" in text and "experiments" in text


class _CommandRecorder(monitoring.CommandListener):
    """Records the commands sent to one database while ``active``."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.active = False
        self.commands: list[str] = []

    def started(self, event) -> None:
        if self.active and event.database_name in (self.database, "admin"):
            self.commands.append(event.command_name)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


#: Commands that read or only talk about the connection.
READ_COMMANDS = frozenset(
    {
        "find",
        "aggregate",
        "count",
        "distinct",
        "getMore",
        "killCursors",
        "listCollections",
        "listIndexes",
        "ping",
        "hello",
        "isMaster",
        "ismaster",
        "buildInfo",
        "buildinfo",
        "serverStatus",
        "endSessions",
        "collStats",
        "dbStats",
    }
)
#: Redis commands that only read.
REDIS_READ_COMMANDS = frozenset(
    {"hgetall", "get", "scan", "info", "ping", "client", "hello", "config", "type", "ttl"}
    | {"zrange", "zrevrange", "hmget", "hget", "lrange", "exists"}  # workers, jobs, sweeps
)


def test_rendering_every_page_writes_nothing(demo_env, monkeypatch):
    _point_at(monkeypatch, demo_env)
    recorder = _CommandRecorder(demo_env.mongo_db)
    monitoring.register(recorder)  # applies to clients created from now on
    st.cache_resource.clear()  # so the app creates its clients again, monitored
    redis = redis_client(demo_env.redis_url)
    redis.config_resetstat()
    recorder.active = True
    try:
        for page in PAGES:
            at = _render(page)
            _assert_clean(at, page)
    finally:
        recorder.active = False
    stats = redis.info("commandstats")
    redis.close()
    assert recorder.commands, "the listener saw no command: it was not attached"
    assert "aggregate" in recorder.commands and "find" in recorder.commands
    writes = sorted(set(recorder.commands) - READ_COMMANDS)
    assert not writes, f"the dashboard sent MongoDB {writes}"
    redis_commands = {name.removeprefix("cmdstat_").split("|")[0] for name in stats}
    assert "hgetall" in redis_commands or "scan" in redis_commands
    redis_writes = sorted(redis_commands - REDIS_READ_COMMANDS)
    assert not redis_writes, f"the dashboard sent Redis {redis_writes}"


def test_a_mongodb_that_does_not_answer_is_an_error_message(empty_env, monkeypatch):
    from services.local import free_port

    monkeypatch.setenv("MONGO_URI", f"mongodb://user:s3cret@127.0.0.1:{free_port()}/")
    monkeypatch.setenv("MONGO_DB", "nothing")
    monkeypatch.setenv("REDIS_URL", empty_env.redis_url)
    monkeypatch.setenv("EEGFS_DATA_DIR", str(empty_env.data_dir))
    at = _render("runs_page.py")
    assert not at.exception
    messages = [e.value for e in at.error]
    assert any("did not answer" in m and "user:***@" in m for m in messages), messages
    assert "s3cret" not in _texts(at) + "".join(messages)


def _running_run(env) -> str:
    """A run marked running with a fresh heartbeat, 3 epochs and 40 step points."""
    import datetime as dt

    from dashboard_testlib import insert_history

    from services.connections import mongo_client

    client = mongo_client(env.mongo_uri)
    try:
        db = client[env.mongo_db]
        now = dt.datetime.now(dt.UTC)
        run_id = db.experiments.insert_one(
            {
                "name": "still-going",
                "challenge": 2,
                "status": "running",
                "started_at": now - dt.timedelta(minutes=3),
                "heartbeat": now,
                "last_epoch": 2,
                "model": {"name": "cnn"},
            }
        ).inserted_id
        insert_history(db, run_id, epochs=3, steps=40)
    finally:
        client.close()
    return str(run_id)


def test_running_run_without_redis_still_draws_from_mongodb(empty_env, monkeypatch):
    from services.local import free_port

    run_id = _running_run(empty_env)
    _point_at(monkeypatch, empty_env)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    at = _render("run_page.py")
    _assert_clean(at, "run_page.py")
    warnings = " ".join(str(w.value) for w in at.warning)
    assert "live step updates are off" in warnings and "Epochs still update" in warnings
    assert len(at.get("plotly_chart")) == 2
    assert "still-going" in _texts(at) and run_id in _texts(at)


def test_running_run_shows_the_live_state(empty_env, monkeypatch):
    import json

    from training.live import state_key

    run_id = _running_run(empty_env)
    redis = redis_client(empty_env.redis_url)
    message = {"type": "step", "experiment_id": run_id, "step": 57, "epoch": 2, "loss": 0.25}
    redis.hset(
        state_key(run_id),
        mapping={
            "step": "57",
            "epoch": "2",
            "last": json.dumps(message),
            "updated": "2026-12-01T10:00:00+00:00",
        },
    )
    redis.close()
    _point_at(monkeypatch, empty_env)
    at = _render("run_page.py")
    _assert_clean(at, "run_page.py")
    text = _texts(at)
    assert "live · updated every 1 s · step 57 · epoch 2" in text
    assert not at.warning
    step_chart = json.loads(at.get("plotly_chart")[1].proto.spec)
    steps = step_chart["data"][0]["x"]
    assert steps[-1] == 57 and steps[:-1] == list(range(40))  # MongoDB's 40, then Redis's


def test_an_unreadable_manifest_is_a_message_on_the_features_page(empty_env, monkeypatch):
    manifest = empty_env.data_dir / "features" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{ not json")
    _point_at(monkeypatch, empty_env)
    at = _render("features_page.py")
    assert not at.exception
    messages = [str(e.value) for e in at.error]
    assert any("unreadable manifest" in m and str(manifest) in m for m in messages), messages
