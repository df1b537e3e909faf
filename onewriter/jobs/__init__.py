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

from .api.aio import AsyncJobStore
from .api.sync import JobStore
from .errors import JobCancelled, JobNotFound, LeaseLost
from .model import Batch, Enqueued, Job, NewJob, QueueSettings, RateLimit, State
from .sqlite.aio import AsyncJobQueue
from .sqlite.ops import jobs_ops
from .sqlite.queue import JobQueue
from .sqlite.sql import SCHEMA
from .transactional import enqueue_in, enqueue_in_async, enqueue_many_in
from .worker.attempt import JobStopped, report_progress
from .worker.runner import PermanentError, Worker, WorkerOptions, WorkerStats

if TYPE_CHECKING:
    from .http.app import create_app
    from .http.remote import RemoteQueue
    from .postgres.queue import AsyncPgJobQueue, PgJobQueue

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
        from .http.remote import RemoteQueue

        return RemoteQueue
    if name == "create_app":
        from .http.app import create_app

        return create_app
    if name in ("PgJobQueue", "AsyncPgJobQueue"):
        from .postgres import queue as _pg

        return getattr(_pg, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
