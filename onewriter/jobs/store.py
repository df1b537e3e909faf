"""The one interface both stores (SQLite, PostgreSQL) implement, and the typed values
they return.

A store describes each call as :data:`Steps`: a generator that yields the store's own
requests (run this write in one transaction, run this read), is sent their answers, and
returns a typed result. The queue's API (:mod:`onewriter.jobs.api`) drives the same
description from synchronous or asyncio code, so neither the stores nor the API are
written twice.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from .model import Job, QueueSettings, State, job_from_row, settings_from_row

T = TypeVar("T")

#: One call of a store: yields requests only that store's runner knows, returns ``T``.
Steps = Generator[Any, Any, T]

#: A heartbeat's answer: the new ``lease_until``, ``"cancelled"`` (stop), or ``None``
#: when the token no longer holds the job.
Heartbeat = float | Literal["cancelled"] | None


class Inserted(NamedTuple):
    """What an enqueue wrote: ids per group of jobs sharing their options, ``[id,
    created]`` per job inserted alone, and the batch callback's id."""

    groups: list[list[int]]
    keyed: list[list[Any]]
    callback: int | None


class Held(NamedTuple):
    """A completion whose token held: the job ended ``done``, or ``cancelled`` when its
    cancellation was asked for meanwhile."""

    id: int
    token: str
    state: str


class Maintenance(NamedTuple):
    reaped: int
    fired: int
    resolved: int
    pruned: int


class StatsRows(NamedTuple):
    """Rows ``stats()`` is made of: ``(queue, state, n)``, ``(queue, oldest run_at)``,
    ``(queue, done in the last minute)`` and ``(queue, paused, limit, period)``."""

    counts: list[Any]
    oldest: list[Any]
    done: list[Any]
    settings: list[Any]


class Store(Protocol):
    """Where jobs live. Each write is one transaction, with the store's clock; arguments
    are checked and encoded by the API beforehand (JSON text where a comment says so)."""

    def setup(self) -> Steps[int]: ...

    def enqueue(
        self,
        queue: str,
        groups: list[list[Any]],
        keyed: list[dict[str, Any]],
        callback: dict[str, Any] | None,
    ) -> Steps[Inserted]: ...

    def claim(
        self, queue: str, worker: str, caps: str, limit: int, lease: float
    ) -> Steps[list[Job]]:
        """``caps``: JSON array."""
        ...

    def heartbeat(
        self, job_id: int, token: str, lease: float, progress: float | None, message: str | None
    ) -> Steps[Heartbeat]: ...

    def complete(self, items: str) -> Steps[list[Held]]:
        """``items``: JSON array of ``[id, token, result JSON or null]``."""
        ...

    def fail(self, job_id: int, token: str, error: str, retry: bool) -> Steps[State | None]: ...

    def release(self, items: list[list[Any]]) -> Steps[list[bool]]: ...

    def requeue_dead(self, ids: str | None, queue: str | None) -> Steps[int]:
        """``ids``: JSON array, or ``None`` for every dead job (of ``queue``)."""
        ...

    def purge(self, queue: str | None, states: str) -> Steps[int]:
        """``states``: JSON array."""
        ...

    def prune(self, retention: float, limit: int) -> Steps[int]: ...

    def schedule(
        self,
        name: str,
        queue: str,
        payload: str,
        every: float | None,
        options: str,
        cron: str | None,
        tz: str | None,
    ) -> Steps[float]:
        """``options``: JSON object of the job's options."""
        ...

    def unschedule(self, name: str) -> Steps[bool]: ...

    def maintain(self, retention: float, limit: int) -> Steps[Maintenance]: ...

    def cancel(self, job_id: int) -> Steps[str | None]: ...

    def retry(self, job_id: int) -> Steps[str | None]: ...

    def configure(
        self, queue: str, paused: bool | None, rate_limit: list[Any] | None, set_rate: bool
    ) -> Steps[QueueSettings]: ...

    def get(self, job_id: int) -> Steps[Job | None]: ...

    def claimable(self, queue: str, caps: str) -> Steps[bool]: ...

    def dead_letters(self, queue: str | None, limit: int) -> Steps[list[Job]]: ...

    def recent(self, limit: int) -> Steps[list[Job]]: ...

    def existing(self, ids: str) -> Steps[set[int]]:
        """Which of ``ids`` (JSON array) exist."""
        ...

    def queue_settings(self, queue: str) -> Steps[QueueSettings]: ...

    def stats(self, now: float) -> Steps[StatsRows]: ...

    def done_per_minute(self, since: float) -> Steps[list[Any]]:
        """``(minute since ``since``, jobs done)`` rows."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Reads:
    """A store's read statements, with the named parameters given in :class:`ReadSteps`.
    Job rows come in the column order of :func:`~onewriter.jobs.model.job_from_row`."""

    get: str
    claimable: str
    dead_letters: str
    recent: str
    counts: str
    oldest_ready: str
    done_since: str
    done_per_minute: str
    queue: str
    queues: str
    existing: str

    @classmethod
    def of(cls, statements: ModuleType) -> Reads:
        """The read statements a store's SQL module names in upper case."""
        return cls(**{f.name: getattr(statements, f.name.upper()) for f in fields(cls)})


class ReadSteps:
    """The reads of :class:`Store`, written once over a store's statements and its
    request for one read (``_query``)."""

    reads: Reads

    def _query(self, sql: str, params: dict[str, Any]) -> object:
        raise NotImplementedError

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> Steps[list[Any]]:
        rows: list[Any] = yield self._query(sql, params or {})
        return rows

    def get(self, job_id: int) -> Steps[Job | None]:
        rows = yield from self._rows(self.reads.get, {"id": job_id})
        return job_from_row(rows[0]) if rows else None

    def claimable(self, queue: str, caps: str) -> Steps[bool]:
        params = {"queue": queue, "caps": caps, "now": time.time(), "limit": 1}
        return bool((yield from self._rows(self.reads.claimable, params)))

    def dead_letters(self, queue: str | None, limit: int) -> Steps[list[Job]]:
        rows = yield from self._rows(self.reads.dead_letters, {"queue": queue, "limit": limit})
        return [job_from_row(row) for row in rows]

    def recent(self, limit: int) -> Steps[list[Job]]:
        rows = yield from self._rows(self.reads.recent, {"limit": limit})
        return [job_from_row(row) for row in rows]

    def existing(self, ids: str) -> Steps[set[int]]:
        return {row[0] for row in (yield from self._rows(self.reads.existing, {"ids": ids}))}

    def queue_settings(self, queue: str) -> Steps[QueueSettings]:
        rows = yield from self._rows(self.reads.queue, {"queue": queue})
        return settings_from_row(queue, rows[0] if rows else None)

    def stats(self, now: float) -> Steps[StatsRows]:
        counts = yield from self._rows(self.reads.counts)
        oldest = yield from self._rows(self.reads.oldest_ready, {"now": now})
        done = yield from self._rows(self.reads.done_since, {"since": now - 60.0})
        settings = yield from self._rows(self.reads.queues)
        return StatsRows(counts, oldest, done, settings)

    def done_per_minute(self, since: float) -> Steps[list[Any]]:
        return (yield from self._rows(self.reads.done_per_minute, {"since": since}))
