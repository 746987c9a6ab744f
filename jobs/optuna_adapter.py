"""The one module that reaches into Optuna: a JSON-only journal on Redis, and opening a trial.

Optuna's own ``JournalRedisBackend`` also stores pickled snapshots of the whole study in Redis
and unpickles them on start (``JournalStorage`` calls ``load_snapshot`` on any backend that
implements ``BaseJournalSnapshot``). :class:`RedisJsonJournal` implements only the public
``BaseJournalBackend`` interface, so the study is rebuilt from the JSON log alone and nothing
in Redis is ever unpickled.

:func:`open_trial` gives the ``eegfs train`` process of a sweep trial the running trial that its
worker asked for (to report intermediate values and ask the pruner). Optuna documents
``Trial(study, trial_id)`` as made by the library itself, and turning a trial number into its id
is a storage method: both are pinned by ``tests/jobs/test_optuna_adapter.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import optuna
import redis
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend


class RedisJsonJournal(BaseJournalBackend):
    """Optuna journal backend: one Redis list of JSON log entries (RPUSH is atomic and ordered).

    Process safe: Redis serialises appends, and every reader replays the same order.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self._key = key

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return [json.loads(raw) for raw in self._client.lrange(self._key, log_number_from, -1)]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if logs:
            self._client.rpush(self._key, *(json.dumps(log) for log in logs))


def journal_storage(client: redis.Redis, key: str) -> JournalStorage:
    """An Optuna storage whose journal is the Redis list ``key`` (JSON only, no snapshots)."""
    return JournalStorage(RedisJsonJournal(client, key))


def open_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """The :class:`optuna.Trial` object of trial ``number`` of ``study`` (another process asked
    for it), for ``report`` and ``should_prune``."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)


__all__ = ["RedisJsonJournal", "journal_storage", "open_trial"]
