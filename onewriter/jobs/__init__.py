"""A durable job queue stored in the same SQLite database, written through the one writer,
or in PostgreSQL shared by any number of service instances.

Leases with tokens, retries with exponential backoff and jitter, dead letters, priorities,
delays, capability routing, unique keys, per-key concurrency limits, periodic jobs,
results, cancellation, progress, timeouts, and queues paused or rate-limited. Served
over HTTP by ``onewriter jobs serve``; run by ``onewriter jobs work``.

``RemoteQueue`` (the HTTP client) and ``create_app`` (the Starlette app) need the
``http`` extra, ``PgJobQueue`` and ``AsyncPgJobQueue`` the ``postgres`` extra; they are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._async_queue import AsyncJobQueue
from ._async_store import AsyncJobStore
from ._attempt import JobStopped, report_progress
from ._errors import JobCancelled, JobNotFound, LeaseLost
from ._model import Batch, Enqueued, Job, NewJob, QueueSettings, RateLimit, State
from ._ops import jobs_ops
from ._queue import JobQueue
from ._sql import SCHEMA
from ._store import JobStore
from ._transactional import enqueue_in, enqueue_in_async, enqueue_many_in
from ._worker import PermanentError, Worker, WorkerOptions, WorkerStats

if TYPE_CHECKING:
    from ._http import create_app
    from ._pg import AsyncPgJobQueue, PgJobQueue
    from ._remote import RemoteQueue

__all__ = [
    "SCHEMA",
    "AsyncJobQueue",
    "AsyncJobStore",
    "AsyncPgJobQueue",
    "Batch",
    "Enqueued",
    "Job",
    "JobCancelled",
    "JobNotFound",
    "JobQueue",
    "JobStopped",
    "JobStore",
    "LeaseLost",
    "NewJob",
    "PermanentError",
    "PgJobQueue",
    "QueueSettings",
    "RateLimit",
    "RemoteQueue",
    "State",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
    "create_app",
    "enqueue_in",
    "enqueue_in_async",
    "enqueue_many_in",
    "jobs_ops",
    "report_progress",
]


def __getattr__(name: str) -> Any:
    if name == "RemoteQueue":
        from ._remote import RemoteQueue

        return RemoteQueue
    if name == "create_app":
        from ._http import create_app

        return create_app
    if name in ("PgJobQueue", "AsyncPgJobQueue"):
        from . import _pg

        return getattr(_pg, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
