"""The Runs page's data against the real test MongoDB: an empty database, 10,000 synthetic
runs (paging and every filter return exactly the right rows, sorted by the server, never more
than one page per reply) and stale runs."""

from __future__ import annotations

import datetime as dt

import pytest
from dashboard_testlib import BASE, PATIENT, insert_runs
from pymongo import monitoring

from dashboard import runs
from services.connections import mongo_client

N_RUNS = 10_000


@pytest.fixture(scope="module")
def synthetic(module_db):
    now = dt.datetime.now(dt.UTC)
    return module_db, insert_runs(module_db, N_RUNS, now)


def _first_ids(db, query: runs.RunQuery, limit: int = 1000) -> list[str]:
    """The first ``limit`` matching ids, page after page (pages of 500)."""
    ids: list[str] = []
    page = 0
    while len(ids) < limit:
        result = runs.runs_page(
            db, runs.RunQuery(**{**query.__dict__, "page": page, "page_size": 500})
        )
        ids += result.rows["id"].tolist()
        if len(result.rows) < 500:
            break
        page += 1
    return ids[:limit]


def _expected(synthetic_runs, keep) -> list[str]:
    """Ids of the runs ``keep`` accepts, newest start first (the default order)."""
    chosen = [r for r in synthetic_runs if keep(r)]
    chosen.sort(key=lambda r: (r.started_at, r.id), reverse=True)
    return [str(r.id) for r in chosen]


def test_empty_database_gives_an_empty_table(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        page = runs.runs_page(client[mongo_db_name], runs.RunQuery())
    finally:
        client.close()
    assert page.total == 0 and page.pages == 1
    assert page.rows.empty and list(page.rows.columns) == list(runs.COLUMNS)


def test_pages_follow_each_other_in_server_order(synthetic):
    db, all_runs = synthetic
    first = runs.runs_page(db, runs.RunQuery(page_size=50))
    second = runs.runs_page(db, runs.RunQuery(page=1, page_size=50))
    last = runs.runs_page(db, runs.RunQuery(page=199, page_size=50))
    beyond = runs.runs_page(db, runs.RunQuery(page=200, page_size=50))
    newest = _expected(all_runs, lambda r: True)
    assert first.total == N_RUNS and first.pages == 200
    assert first.rows["id"].tolist() == newest[:50]
    assert second.rows["id"].tolist() == newest[50:100]
    assert last.rows["id"].tolist() == newest[-50:]
    assert beyond.rows.empty and beyond.total == N_RUNS
    row = first.rows.iloc[0]
    assert row["name"] == f"run-{N_RUNS - 1:05d}" and row["epochs"] == 20


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        (runs.RunQuery(challenge=1), lambda r: r.challenge == 1),
        (runs.RunQuery(status="failed"), lambda r: r.status == "failed"),
        (runs.RunQuery(status="running"), lambda r: r.status == "running"),
        (runs.RunQuery(status="stale"), lambda r: r.status == "stale"),
        (runs.RunQuery(tag="sweep"), lambda r: "sweep" in r.tags),
        (runs.RunQuery(text="NEEDLE"), lambda r: "needle" in r.notes),
        (runs.RunQuery(text="run-0004"), lambda r: f"run-{r.index:05d}".startswith("run-0004")),
        (
            runs.RunQuery(
                started_from=BASE + dt.timedelta(minutes=100),
                started_to=BASE + dt.timedelta(minutes=400),
            ),
            lambda r: 100 <= r.index < 400,
        ),
        (
            runs.RunQuery(metric_min=0.6, metric_max=0.65),
            lambda r: r.nrmse is not None and 0.6 <= r.nrmse <= 0.65,
        ),
        (
            runs.RunQuery(challenge=2, status="completed", tag="baseline", metric_max=0.7),
            lambda r: (
                r.challenge == 2
                and r.status == "completed"
                and "baseline" in r.tags
                and r.nrmse <= 0.7
            ),
        ),
    ],
    ids=[
        "challenge",
        "failed",
        "running",
        "stale",
        "tag",
        "notes",
        "name",
        "dates",
        "metric",
        "all",
    ],
)
def test_filters_return_exactly_the_matching_runs(synthetic, query, keep):
    db, all_runs = synthetic
    expected = _expected(all_runs, keep)
    assert expected, "the synthetic data must contain matching runs"
    assert _first_ids(db, query) == expected[:1000]
    assert runs.runs_page(db, query).total == len(expected)


def test_metric_filter_on_another_metric_and_reported_statuses(synthetic):
    db, all_runs = synthetic
    query = runs.RunQuery(metric="val_nrmse", metric_max=0.61, challenge=1)
    expected = _expected(
        all_runs, lambda r: r.challenge == 1 and r.nrmse is not None and r.nrmse + 0.1 <= 0.61
    )
    assert _first_ids(db, query) == expected[:1000]
    page = runs.runs_page(db, runs.RunQuery(status="stale", page_size=5))
    assert set(page.rows["status"]) == {"stale"}


def test_sorting_is_done_by_the_server(synthetic):
    db, all_runs = synthetic
    best = runs.runs_page(db, runs.RunQuery(sort="best_nrmse", descending=False, page_size=20))
    values = best.rows["best_nrmse"].tolist()
    assert values == sorted(values) and values[0] == 0.5
    worst_first = runs.runs_page(db, runs.RunQuery(sort="best_nrmse", page_size=5))
    assert worst_first.rows["best_nrmse"].max() == max(r.nrmse for r in all_runs if r.nrmse)
    by_name = runs.runs_page(db, runs.RunQuery(sort="name", descending=False, page_size=3))
    assert by_name.rows["name"].tolist() == ["run-00000", "run-00001", "run-00002"]
    longest = runs.runs_page(db, runs.RunQuery(sort="duration", page_size=3, status="running"))
    assert longest.rows["duration_s"].is_monotonic_decreasing


class _Replies(monitoring.CommandListener):
    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        cursor = event.reply.get("cursor") or {}
        batch = cursor.get("firstBatch", cursor.get("nextBatch"))
        if batch is not None:
            self.batches.append((event.command_name, len(batch)))

    def failed(self, event) -> None:
        pass


def test_no_reply_is_larger_than_one_page(synthetic, mongo_server_uri):
    db, _ = synthetic
    listener = _Replies()
    client = mongo_client(mongo_server_uri, event_listeners=[listener], **PATIENT)
    try:
        monitored = client[db.name]
        for query in (
            runs.RunQuery(page_size=25),
            runs.RunQuery(page=3, page_size=25, sort="best_nrmse"),
            runs.RunQuery(page_size=25, challenge=2, metric_min=0.55, sort="duration"),
        ):
            page = runs.runs_page(monitored, query)
            assert len(page.rows) == 25
    finally:
        client.close()
    assert listener.batches and all(n <= 25 for _, n in listener.batches), listener.batches


def test_a_running_run_without_a_recent_heartbeat_shows_stale(mongo_db_name, mongo_server_uri):
    client = mongo_client(mongo_server_uri)
    try:
        db = client[mongo_db_name]
        now = dt.datetime.now(dt.UTC)
        db.experiments.insert_many(
            [
                {"name": "alive", "status": "running", "started_at": now, "heartbeat": now},
                {
                    "name": "silent",
                    "status": "running",
                    "started_at": now - dt.timedelta(hours=1),
                    "heartbeat": now - dt.timedelta(minutes=10),
                },
            ]
        )
        page = runs.runs_page(db, runs.RunQuery())
        shown = dict(zip(page.rows["name"], page.rows["status"], strict=True))
        assert shown == {"alive": "running", "silent": "stale"}
        strict = runs.runs_page(db, runs.RunQuery(), stale_after_s=1e6)
        assert set(strict.rows["status"]) == {"running"}
        stale = runs.runs_page(db, runs.RunQuery(status="stale"))
        assert stale.rows["name"].tolist() == ["silent"]
        recent = runs.recent_runs(db)
        assert [r["name"] for r in recent] == ["alive", "silent"]
    finally:
        client.close()


def test_bad_queries_name_the_problem():
    with pytest.raises(ValueError, match="challenge must be 1 or 2"):
        runs.RunQuery(challenge=3)
    with pytest.raises(ValueError, match="status must be one of"):
        runs.RunQuery(status="done")
    with pytest.raises(ValueError, match="sort must be one of"):
        runs.RunQuery(sort="color")
    with pytest.raises(ValueError, match="timezone-aware"):
        runs.RunQuery(started_from=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="not a metric name"):
        runs.RunQuery(metric="$where")


def test_tag_options_most_used_first(synthetic):
    db, _ = synthetic
    assert runs.tag_options(db) == ["baseline", "sweep"]
