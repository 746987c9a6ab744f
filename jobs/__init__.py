"""Many trainings on many machines: a Redis job queue (RQ), workers with heartbeats, sweeps
(Optuna). Imports training-free modules of ``tracking`` and ``services``; runs ``eegfs train``
and ``eegfs features build`` as processes, so it depends on the CLI, not on training internals.

See docs/jobs.md. Modules: :mod:`jobs.queue` (submit, list, cancel, retry), :mod:`jobs.worker`
(``eegfs worker``), :mod:`jobs.heartbeats`, :mod:`jobs.recovery` (lost workers),
:mod:`jobs.fence` (attempt fencing), :mod:`jobs.sweeps`, :mod:`jobs.space`,
:mod:`jobs.rq_adapter` and :mod:`jobs.optuna_adapter` (the only modules touching library
internals), :mod:`jobs.tasks` (what a job runs), :mod:`jobs.child` (hooks of a job's process).
"""
