"""``--skip-if-done``: claim a run's identity before training it, so it is trained once.

Of several trainings of the same run started together with ``skip_if_done=True``, exactly one
trains; each other one returns a :class:`Deferred` naming the run it defers to (completed, or
being trained right now). The claim lives in MongoDB (:mod:`tracking.claims`, one document per
identity under a unique key); a claim whose holder failed or went silent is taken over.

A run's identity is its configuration (less :data:`NOT_IDENTITY`), its code commit and the
feature snapshot it reads (the served snapshot for online features, the frame's content hash
for historical ones). With uncommitted changes there is no identity: the run trains and says
why. Only ``--skip-if-done`` claims: ``make train``, retries and reproductions record new runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tracking.claims import Claim, claim_run, complete_claim, release_claim, run_identity
from tracking.database import open_database
from training.config import TrainConfig

logger = logging.getLogger(__name__)

#: Config fields that do not change what a run computes (left out of its identity).
NOT_IDENTITY = frozenset(
    {"workers", "log_every", "cache_size", "name", "tags", "notes", "upload_checkpoints"}
)


@dataclass(frozen=True)
class Deferred:
    """``--skip-if-done`` did not train: an identical run is ``completed`` or ``running``."""

    experiment_id: str
    state: str
    reason: str


def identity_config(config: TrainConfig) -> dict[str, Any]:
    """The part of ``config`` that decides what a run computes."""
    return {k: v for k, v in config.to_dict().items() if k not in NOT_IDENTITY}


class RunClaim:
    """The claim side of one ``--skip-if-done`` training (see the module docstring).

    Parameters
    ----------
    settings : Settings
        The tracking database.
    code : mapping
        ``{"commit", "dirty"}`` of the code that trains (:func:`tracking.gitinfo.detect_git`).
    echo : callable
        Receives the line saying why a run trains without a claim, or whose claim it took over.
    """

    def __init__(self, settings, *, code: Mapping[str, Any], echo: Callable[[str], None]) -> None:
        self.settings = settings
        self.code = dict(code)
        self.echo = echo
        self.claim: Claim | None = None

    def acquire(self, config: TrainConfig, snapshot_id: str | None) -> Deferred | None:
        """Claim the run ``config`` reading ``snapshot_id``; a :class:`Deferred` when another has.

        None means: train (claimed, or no identity because the tree is dirty).
        """
        identity = run_identity(identity_config(config), code=self.code, snapshot_id=snapshot_id)
        if identity.key is None:
            self.echo(f"--skip-if-done: {identity.reason}; training anyway")
            return None
        with open_database(self.settings) as db:
            claim = claim_run(db, identity, holder={"name": config.default_name()})
        if not claim.won:
            return Deferred(str(claim.run_id), claim.state, claim.reason)
        if claim.took_over is not None:
            self.echo(f"--skip-if-done: {claim.reason}")
        self.claim = claim
        return None

    @property
    def experiment_id(self) -> str | None:
        """The run id this process records under (the claimed one), or None without a claim."""
        return None if self.claim is None else str(self.claim.run_id)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Complete the claim when the block ends normally, release it when it raises."""
        try:
            yield
        except BaseException as exc:
            self._finish(release_claim, error=f"{type(exc).__name__}: {exc}")
            raise
        self._finish(complete_claim)

    def _finish(self, action, **kwargs) -> None:
        if self.claim is None:
            return
        try:
            with open_database(self.settings) as db:
                held = action(db, self.claim, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome must not be masked
            logger.warning("could not update the --skip-if-done claim: %s", exc)
            return
        if not held:
            logger.warning(
                "the --skip-if-done claim of experiment %s was taken over by another process "
                "while this one trained",
                self.claim.run_id,
            )


def format_deferred(deferred: Deferred) -> str:
    """What ``eegfs train --skip-if-done`` prints when it does not train."""
    return f"{deferred.reason}\ndetails         eegfs runs show {deferred.experiment_id}"


__all__ = ["NOT_IDENTITY", "Deferred", "RunClaim", "format_deferred", "identity_config"]
