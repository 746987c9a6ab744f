"""Opening the tracking database for one command: ping first, clear error, indexes ensured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pymongo
from pymongo.database import Database

from services.connections import mask_uri, mongo_client
from services.settings import Settings
from tracking.errors import TrackingError, TrackingUnavailableError
from tracking.schema import ensure_indexes


@contextmanager
def open_database(
    settings: Settings, *, indexes: bool = True, timeout_s: float = 5.0
) -> Iterator[Database]:
    """The database ``settings.mongo_db``, with its indexes, closed afterwards.

    Raises
    ------
    TrackingUnavailableError
        When MongoDB does not answer within ``timeout_s`` (the address is shown masked).
    """
    try:
        client = mongo_client(settings.mongo_uri)
    except pymongo.errors.ConfigurationError as exc:
        raise TrackingError(
            f"MONGO_URI {mask_uri(settings.mongo_uri)} is not a valid MongoDB address ({exc}); "
            "expected mongodb://[user:password@]host:port/[?options]"
        ) from exc
    try:
        try:
            with pymongo.timeout(timeout_s):
                client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            raise TrackingUnavailableError(
                f"MongoDB at {mask_uri(settings.mongo_uri)} is not answering ({type(exc).__name__}); "
                "start one with `eegfs services up` or set MONGO_URI"
            ) from exc
        db = client[settings.mongo_db]
        if indexes:
            ensure_indexes(db)
        yield db
    finally:
        client.close()
