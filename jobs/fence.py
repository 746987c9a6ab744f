"""A job's state and its attempt fence, changed only by atomic Lua scripts on the job's hash.

Each attempt of a job gets a number (``attempt``), the fencing token. Only the worker that holds
the current attempt may move the job on: claim its completion, finish it, or (when that worker
is lost) hand it on to the queue again. The scripts compare the token and change the state in
one step, so a worker that was frozen (SIGSTOP) while its job was handed on finds, when it
wakes up, that every transition it tries is refused.

States::

    queued ──begin──> started ──claim──> completing ──finish──> finished | failed | canceled
      ^                  │ └──────────────finish──────────────────^
      └───hand_on────────┘ (worker lost; ``failed`` once max_attempts are used)
    queued ──cancel──> canceled;   failed | canceled ──retry──> queued

Redis runs each script atomically; scripts touch only the keys they are given (cluster-safe
names are not needed: one Redis serves the queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from jobs.keys import JobKeys

QUEUED = "queued"
STARTED = "started"
COMPLETING = "completing"
FINISHED = "finished"
FAILED = "failed"
CANCELED = "canceled"
#: States a job ends in; its hash then expires after the retention period.
TERMINAL = (FINISHED, FAILED, CANCELED)
STATES = (QUEUED, STARTED, COMPLETING, *TERMINAL)

# KEYS[1] job hash, KEYS[2] running hash; ARGV: job id, worker, now
_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' then return {0, state or ''} end
local n = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'started', 'worker', ARGV[2], 'started_at', ARGV[3],
           'ended_at', '', 'reason', '')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. n)
return {n, 'started'}
"""

# KEYS[1] job hash; ARGV: attempt, worker
_CLAIM = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker', 'state')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] == 'started' then
  redis.call('HSET', KEYS[1], 'state', 'completing')
  return 1
end
if cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] == 'completing' then return 1 end
return 0
"""

# KEYS[1] job hash, KEYS[2] running hash; ARGV: job id, attempt, worker, outcome, now, reason,
# retention seconds, result JSON
_FINISH = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker', 'state')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return 0 end
if cur[3] ~= 'started' and cur[3] ~= 'completing' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'ended_at', ARGV[5], 'reason', ARGV[6],
           'result', ARGV[8])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
return 1
"""

# KEYS[1] job hash, KEYS[2] running hash, KEYS[3] handoffs set; ARGV: job id, attempt, worker,
# now, reason, retention. Each handoff is also added to the handoffs set (``job|attempt|outcome|
# worker``) until its follow-up (RQ requeue, runs marked failed, trial failed) is done.
_HAND_ON = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker', 'state', 'base', 'max_attempts')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then
  if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[3] .. '|' .. ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
  return ''
end
redis.call('HDEL', KEYS[2], ARGV[1])
if cur[3] == 'completing' then
  redis.call('HSET', KEYS[1], 'state', 'finished', 'ended_at', ARGV[4],
             'reason', 'worker lost after the run completed')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  redis.call('SADD', KEYS[3], ARGV[1] .. '|' .. ARGV[2] .. '|finished|' .. ARGV[3])
  return 'finished'
end
if cur[3] ~= 'started' then return '' end
local used = tonumber(cur[1]) - tonumber(cur[4] or '0')
if used >= tonumber(cur[5]) then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'ended_at', ARGV[4], 'worker', '',
             'reason', ARGV[5] .. '; no attempts left (' .. used .. ' of ' .. cur[5] .. ' used)')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  redis.call('SADD', KEYS[3], ARGV[1] .. '|' .. ARGV[2] .. '|failed|' .. ARGV[3])
  return 'failed'
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'reason', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1] .. '|' .. ARGV[2] .. '|queued|' .. ARGV[3])
return 'queued'
"""

# KEYS[1] job hash; ARGV: now, retention
_CANCEL_QUEUED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'canceled', 'ended_at', ARGV[1], 'reason', 'canceled')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS[1] job hash; ARGV: none
_RETRY = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'attempt')
if cur[1] ~= 'failed' and cur[1] ~= 'canceled' then return cur[1] or '' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'base', cur[2], 'worker', '', 'reason', '',
           'ended_at', '')
redis.call('PERSIST', KEYS[1])
return 'ok'
"""


def utcnow_text() -> str:
    """Now, UTC, ISO 8601 with milliseconds (how the job hash stores times)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Attempt:
    """One attempt of one job on one worker: the fencing token."""

    job_id: str
    number: int
    worker: str


@dataclass(frozen=True)
class Handoff:
    """A job taken from a lost worker: its lost attempt and what became of the job."""

    attempt: Attempt
    outcome: str  # queued, failed or finished
    member: bytes


class Fence:
    """The job-state scripts, bound to one Redis client and key prefix."""

    def __init__(self, client: redis.Redis, keys: JobKeys, *, retention_s: int) -> None:
        self.client = client
        self.keys = keys
        self.retention_s = int(retention_s)
        self._begin = client.register_script(_BEGIN)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._hand_on = client.register_script(_HAND_ON)
        self._cancel = client.register_script(_CANCEL_QUEUED)
        self._retry = client.register_script(_RETRY)

    def begin(self, job_id: str, worker: str) -> Attempt | None:
        """Start the next attempt of a queued job; None when the job is not queued."""
        number, _state = self._begin(
            keys=[self.keys.job(job_id), self.keys.running], args=[job_id, worker, utcnow_text()]
        )
        return Attempt(job_id, int(number), worker) if int(number) > 0 else None

    def claim(self, attempt: Attempt) -> bool:
        """Claim the right to complete: True only while ``attempt`` is the current one."""
        return bool(
            self._claim(keys=[self.keys.job(attempt.job_id)], args=[attempt.number, attempt.worker])
        )

    def finish(
        self, attempt: Attempt, outcome: str, *, reason: str = "", result: str = "null"
    ) -> bool:
        """End the job with ``outcome`` (finished, failed, canceled) if ``attempt`` is current."""
        if outcome not in TERMINAL:
            raise ValueError(f"outcome must be one of {TERMINAL}, got {outcome!r}")
        return bool(
            self._finish(
                keys=[self.keys.job(attempt.job_id), self.keys.running],
                args=[
                    attempt.job_id,
                    attempt.number,
                    attempt.worker,
                    outcome,
                    utcnow_text(),
                    reason,
                    self.retention_s,
                    result,
                ],
            )
        )

    def hand_on(self, attempt: Attempt, reason: str) -> str:
        """Take the job from a lost worker: ``queued`` again, ``failed`` (no attempts left),
        ``finished`` (it had claimed completion) or ``''`` (not this attempt's job any more)."""
        answer = self._hand_on(
            keys=[self.keys.job(attempt.job_id), self.keys.running, self.keys.handoffs],
            args=[
                attempt.job_id,
                attempt.number,
                attempt.worker,
                utcnow_text(),
                reason,
                self.retention_s,
            ],
        )
        return answer.decode() if isinstance(answer, bytes) else str(answer or "")

    def pending_handoffs(self) -> list[Handoff]:
        """Handoffs whose follow-up is not done yet (see :mod:`jobs.recovery`)."""
        out = []
        for member in self.client.smembers(self.keys.handoffs):
            job_id, number, outcome, worker = member.decode().split("|", 3)
            out.append(Handoff(Attempt(job_id, int(number), worker), outcome, member))
        return out

    def handoff_done(self, handoff: Handoff) -> None:
        self.client.srem(self.keys.handoffs, handoff.member)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that no worker has started; False when it is not queued."""
        return bool(
            self._cancel(keys=[self.keys.job(job_id)], args=[utcnow_text(), self.retention_s])
        )

    def retry(self, job_id: str) -> str:
        """Queue a failed or canceled job again with a fresh budget of attempts.

        Returns ``ok``, or the state that does not allow it.
        """
        answer = self._retry(keys=[self.keys.job(job_id)], args=[])
        return answer.decode() if isinstance(answer, bytes) else str(answer or "")

    def is_current(self, attempt: Attempt) -> bool:
        """True while ``attempt`` is the job's current attempt (not handed on)."""
        number, worker = self.client.hmget(self.keys.job(attempt.job_id), "attempt", "worker")
        return (
            number is not None
            and int(number) == attempt.number
            and ((worker or b"").decode() == attempt.worker)
        )

    def running(self) -> dict[str, Attempt]:
        """Job id -> the attempt that runs it now (the ``running`` index)."""
        out = {}
        for job_id, value in self.client.hgetall(self.keys.running).items():
            worker, _, number = value.decode().rpartition("|")
            out[job_id.decode()] = Attempt(job_id.decode(), int(number), worker)
        return out


__all__ = [
    "CANCELED",
    "COMPLETING",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "STARTED",
    "STATES",
    "TERMINAL",
    "Attempt",
    "Fence",
    "Handoff",
    "utcnow_text",
]
