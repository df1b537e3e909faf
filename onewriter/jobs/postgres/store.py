"""The PostgreSQL store: each write is a transaction of the statements of
:mod:`onewriter.jobs.postgres.steps` (run again from the start when it loses a race);
reads are one statement on a pooled autocommit connection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..model import Job, QueueSettings, State, job_from_row, settings_from_row
from ..store import Heartbeat, Held, Inserted, Maintenance, Reads, ReadSteps, Steps, Store
from . import sql, steps
from .steps import Statement


@dataclass(frozen=True, slots=True)
class Transaction:
    """Run the statements ``steps()`` yields in one transaction; answered with what it
    returns. A factory, so that a retry starts afresh."""

    steps: Callable[[], Steps[Any]]


class PgStore(ReadSteps):
    reads = Reads.of(sql)

    def _query(self, sql: str, params: dict[str, Any]) -> Statement:
        return Statement(sql, params)

    def setup(self) -> Steps[int]:
        return int((yield Transaction(steps.setup)))

    def enqueue(
        self,
        queue: str,
        groups: list[list[Any]],
        keyed: list[dict[str, Any]],
        callback: dict[str, Any] | None,
    ) -> Steps[Inserted]:
        result = yield Transaction(lambda: steps.enqueue(queue, groups, keyed, callback))
        return Inserted(result[0], result[1], result[2] if len(result) > 2 else None)

    def claim(
        self, queue: str, worker: str, caps: str, limit: int, lease: float
    ) -> Steps[list[Job]]:
        rows = yield Transaction(lambda: steps.claim(queue, worker, caps, limit, lease))
        return [job_from_row(row) for row in rows]

    def heartbeat(
        self, job_id: int, token: str, lease: float, progress: float | None, message: str | None
    ) -> Steps[Heartbeat]:
        until: Heartbeat = yield Transaction(
            lambda: steps.heartbeat(job_id, token, lease, progress, message)
        )
        return until

    def complete(self, items: str) -> Steps[list[Held]]:
        return [Held(*row) for row in (yield Transaction(lambda: steps.complete(items)))]

    def fail(self, job_id: int, token: str, error: str, retry: bool) -> Steps[State | None]:
        result = yield Transaction(lambda: steps.fail(job_id, token, error, retry))
        return None if result is None else result[0]

    def release(self, items: list[list[Any]]) -> Steps[list[bool]]:
        held: list[bool] = yield Transaction(lambda: steps.release(items))
        return held

    def requeue_dead(self, ids: str | None, queue: str | None) -> Steps[int]:
        return int((yield Transaction(lambda: steps.requeue_dead(ids, queue))))

    def purge(self, queue: str | None, states: str) -> Steps[int]:
        return int((yield Transaction(lambda: steps.purge(queue, states))))

    def prune(self, retention: float, limit: int) -> Steps[int]:
        return int((yield Transaction(lambda: steps.prune(retention, limit))))

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
        return float(
            (
                yield Transaction(
                    lambda: steps.schedule(name, queue, payload, every, options, cron, tz)
                )
            )
        )

    def unschedule(self, name: str) -> Steps[bool]:
        return bool((yield Transaction(lambda: steps.unschedule(name))))

    def maintain(self, retention: float, limit: int) -> Steps[Maintenance]:
        done: Maintenance = yield Transaction(lambda: steps.maintain(retention, limit))
        return done

    def cancel(self, job_id: int) -> Steps[str | None]:
        state: str | None = yield Transaction(lambda: steps.cancel(job_id))
        return state

    def retry(self, job_id: int) -> Steps[str | None]:
        queue: str | None = yield Transaction(lambda: steps.retry(job_id))
        return queue

    def configure(
        self, queue: str, paused: bool | None, rate_limit: list[Any] | None, set_rate: bool
    ) -> Steps[QueueSettings]:
        row = yield Transaction(lambda: steps.configure(queue, paused, rate_limit, set_rate))
        return settings_from_row(queue, row)


STORE: Store = PgStore()
