"""Every tracking write is sent with a write concern that survives a server crash, chosen in one place.

Promise (docs/tracking.md, "Durability"): ``w="majority", j=True`` on a replica set, ``j=True``
on a standalone server, set by ``tracking.database.durable_database`` and nowhere else; so
``Tracker.flush()`` returning True means every write is journaled. These tests pin the choice
and that every write the tracker, the registry and GridFS send carries it; the crash itself is
tests/faults/test_fault_mongo_crash.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pymongo import monitoring
from tracking_testlib import start_example_run

from services.connections import mongo_client
from services.settings import Settings
from tracking import Tracker
from tracking.database import durable_database, durable_write_concern, open_database
from tracking.ops import OpApplier
from tracking.registry import ModelRegistry

TRACKING = Path(__file__).resolve().parents[2] / "tracking"
REPLICA_SET = {"w": "majority", "j": True}
STANDALONE = {"j": True}
# Commands that write (the ones a write concern applies to).
WRITE_COMMANDS = frozenset(
    {"insert", "update", "delete", "findAndModify", "createIndexes", "create", "drop"}
)


class _WriteConcerns(monitoring.CommandListener):
    """Records the write concern of every write command sent to one database.

    pymongo's listeners are process-wide and cannot be removed, so it stops recording when the
    test ends (``active = False``).
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.active = True
        self.writes: list[tuple[str, dict | None]] = []

    def started(self, event) -> None:
        mine = self.active and event.database_name == self.database
        if mine and event.command_name in WRITE_COMMANDS:
            self.writes.append((event.command_name, event.command.get("writeConcern")))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def _handle_makers(path: Path) -> list[str]:
    """Lines of ``path`` that make a database handle or a transaction without durable_database."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        what = None
        if isinstance(node, ast.Subscript) and _name(node.value).endswith("client"):
            what = "client[...]"
        elif isinstance(node, ast.Call) and _name(node.func) in {
            "get_database",
            "with_options",
            "start_session",
            "with_transaction",
            "MongoClient",
            "Database",
        }:
            what = _name(node.func) + "(...)"
        if what is not None:
            found.append(f"{path.name}:{node.lineno} {what}")
    return found


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _record_a_run(tracker: Tracker, tmp_path: Path):
    run = start_example_run(tracker)
    path = tmp_path / "best.pt"
    for epoch in range(3):
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=epoch * 5 + step)
        run.log_epoch(epoch, {"val_loss": 1.0 / (epoch + 1)})
        path.write_bytes(f"weights {epoch}".encode() * 1000)
        ckpt = run.log_checkpoint(
            path, epoch=epoch, metrics={"val_loss": 1.0 / (epoch + 1)}, is_best=True, upload=True
        )
    run.set_summary({"val_loss": 1 / 3, "best_epoch": 2})
    run.attach_log("log\n")
    run.finish()
    return run, ckpt


def test_only_tracking_database_makes_database_handles():
    # No other module can hand out a handle with pymongo's default (w:1) write concern, and
    # none uses a transaction (whose commit would take the client's write concern instead).
    offenders = [
        line
        for path in sorted(TRACKING.glob("*.py"))
        if path.name != "database.py"
        for line in _handle_makers(path)
    ]
    assert offenders == []


def test_replica_set_writes_wait_for_a_journaled_majority(settings, mongo_server_uri, tmp_path):
    client = mongo_client(mongo_server_uri)
    try:
        assert durable_write_concern(client).document == REPLICA_SET
        assert durable_database(client, "x").write_concern.document == REPLICA_SET
        applier_db = OpApplier(client).database(settings.mongo_db)
        assert applier_db.write_concern.document == REPLICA_SET
        assert applier_db["fs.chunks"].write_concern.document == REPLICA_SET  # GridFS's too
    finally:
        client.close()
    with open_database(settings) as db:
        assert db.write_concern.document == REPLICA_SET
    with Tracker(settings) as tracker:
        assert tracker.flush() is True
        assert tracker.db.write_concern.document == REPLICA_SET


def test_every_write_of_a_run_and_the_registry_is_sent_durable(settings, tmp_path):
    recorder = _WriteConcerns(settings.mongo_db)
    monitoring.register(recorder)
    try:
        with Tracker(settings) as tracker:
            _, ckpt = _record_a_run(tracker, tmp_path)
            assert tracker.flush() is True
        with open_database(settings) as db:
            ModelRegistry(db).register("eegnex", ckpt, aliases=["candidate"])
    finally:
        recorder.active = False
    sent = {name for name, _ in recorder.writes}
    assert {"insert", "update", "createIndexes", "findAndModify"} <= sent
    not_durable = [(name, wc) for name, wc in recorder.writes if wc != REPLICA_SET]
    assert not_durable == []


def test_standalone_writes_wait_for_the_journal(standalone_mongo_uri, tmp_path):
    client = mongo_client(standalone_mongo_uri)
    try:
        assert durable_write_concern(client).document == STANDALONE
    finally:
        client.close()
    settings = Settings(mongo_uri=standalone_mongo_uri, mongo_db="alone", data_dir=tmp_path / "d")
    recorder = _WriteConcerns("alone")
    monitoring.register(recorder)
    try:
        with Tracker(settings) as tracker:
            run, ckpt = _record_a_run(tracker, tmp_path)
            assert tracker.flush() is True
            assert tracker.db.write_concern.document == STANDALONE
            doc = tracker.get_run(run.id)
    finally:
        recorder.active = False
    # A server without transactions switches the best checkpoint the same way.
    assert doc["best_checkpoint"]["id"] == ckpt and doc["summary"]["best_epoch"] == 2
    assert recorder.writes and all(wc == STANDALONE for _, wc in recorder.writes)


def test_flush_is_false_when_mongodb_refused_a_write(tracker, db):
    run = start_example_run(tracker)
    assert tracker.flush() is True
    # A write the server rejects for good (an unknown update operator): not acknowledged.
    tracker._submit({"op": "update", "id": run.id, "update": {"$bogus": {"a": 1}}})
    assert tracker.flush() is False
    assert tracker.rejected == 1
    assert db.experiments.find_one({"_id": run.id})["status"] == "running"
