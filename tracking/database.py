"""The tracking database: the one place where its handles, and their write concern, are made.

**Durability.** Every tracking write (the tracker's background writer and op applier, spool
replays, the registry, GridFS uploads, subjects, datasets, the SQLite migration, restore) goes
through a :class:`~pymongo.database.Database` made by :func:`durable_database`, which carries a
write concern that survives a server crash:

* ``w="majority", j=True`` on a replica set (docker-compose's MongoDB, secantusdb) and through
  ``mongos``: acknowledged once a majority of members has the write in its on-disk journal;
* ``j=True`` on a standalone server: acknowledged once the write is in its on-disk journal.

pymongo's default (``w:1`` without ``j``) acknowledges a write once it is in the server's memory;
a crash (SIGKILL, power loss) can then lose acknowledged writes, and did (issue 9: 21 writes
acknowledged, then a SIGKILL, 0 left). Collections and GridFS buckets derived from a durable
handle inherit its write concern. The tracking code uses no transactions (a transaction's
commit would take the *client's* write concern, not the database's; see tracking/best.py for the
ordering used instead), and no module of ``tracking`` other than this one turns a client into a
database handle (a test greps for it).

Reads are unaffected: the write concern only changes when a write is acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pymongo
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from services.connections import ServiceError, mongo_client
from services.settings import Settings
from tracking.errors import TrackingError, mongo_unavailable
from tracking.schema import ensure_indexes

#: Acknowledged once in the on-disk journal of a majority of the replica set's members.
REPLICA_SET_WRITE_CONCERN = WriteConcern(w="majority", j=True)
#: Acknowledged once in the on-disk journal of the one server.
STANDALONE_WRITE_CONCERN = WriteConcern(j=True)

#: pymongo's name for a server that is neither a replica-set member nor a mongos.
_STANDALONE = "Standalone"


def durable_write_concern(client: pymongo.MongoClient) -> WriteConcern:
    """The write concern under which a write to ``client``'s deployment survives a crash.

    ``j=True`` on a standalone server, ``w="majority", j=True`` otherwise (replica set, sharded
    cluster, load balancer). The kind of deployment comes from the client's view of the
    topology; when the client has not reached a server yet it pings once (which raises
    pymongo's ``ConnectionFailure`` when the server does not answer).
    """
    kinds = _server_kinds(client)
    if not kinds:
        client.admin.command("ping")  # selects a server, so its kind is known afterwards
        kinds = _server_kinds(client)
    if kinds == {_STANDALONE}:
        return STANDALONE_WRITE_CONCERN
    return REPLICA_SET_WRITE_CONCERN


def _server_kinds(client: pymongo.MongoClient) -> set[str]:
    """pymongo's server type names of the servers ``client`` has reached (``Unknown`` left out)."""
    descriptions = client.topology_description.server_descriptions().values()
    return {d.server_type_name for d in descriptions if d.server_type_name != "Unknown"}


def durable_database(client: pymongo.MongoClient, name: str) -> Database:
    """Database ``name`` of ``client`` with the write concern of :func:`durable_write_concern`.

    Every tracking write goes through a handle made here.
    """
    return client.get_database(name, write_concern=durable_write_concern(client))


@contextmanager
def open_database(
    settings: Settings, *, indexes: bool = True, timeout_s: float | None = None
) -> Iterator[Database]:
    """The database ``settings.mongo_db`` (durable writes, indexes ensured), closed afterwards.

    Raises
    ------
    TrackingUnavailableError
        When MongoDB does not answer within ``timeout_s`` (default ``settings.mongo_timeout_s``)
        or refuses the login (the address is shown masked).
    """
    timeout_s = settings.mongo_timeout_s if timeout_s is None else timeout_s
    try:
        client = mongo_client(settings.mongo_uri, timeout_ms=int(timeout_s * 1000))
    except ServiceError as exc:  # an address pymongo cannot parse
        raise TrackingError(str(exc)) from exc
    try:
        try:
            with pymongo.timeout(timeout_s):
                client.admin.command("ping")
                db = durable_database(client, settings.mongo_db)
        except pymongo.errors.PyMongoError as exc:
            raise mongo_unavailable(exc, settings.mongo_uri) from exc
        if indexes:
            ensure_indexes(db)
        yield db
    finally:
        client.close()
