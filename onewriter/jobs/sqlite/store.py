"""The SQLite store: each write is an op of :data:`~onewriter.jobs.jobs_ops` the one
writer runs in its transaction (with the writer's clock); reads run on the calling
process's readers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...ops import Op
from ..model import Job, QueueSettings, State, job_from_row, settings_from_row
from ..store import Heartbeat, Held, Inserted, Maintenance, Reads, ReadSteps, Steps, Store
from . import ops, sql


@dataclass(frozen=True, slots=True)
class Write:
    """Run ``op`` on the writer with ``kwargs``; answered with the op's result."""

    op: Op[..., Any]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Read:
    """Run one read on this process's readers; answered with its rows."""

    sql: str
    params: dict[str, Any]


class SqliteStore(ReadSteps):
    reads = Reads.of(sql)

    def _query(self, sql: str, params: dict[str, Any]) -> Read:
        return Read(sql, params)

    def setup(self) -> Steps[int]:
        return int((yield Write(ops.jobs_setup, {})))

    def enqueue(
        self,
        queue: str,
        groups: list[list[Any]],
        keyed: list[dict[str, Any]],
        callback: dict[str, Any] | None,
    ) -> Steps[Inserted]:
        kwargs: dict[str, Any] = {"queue": queue, "groups": groups, "keyed": keyed}
        if callback is not None:
            kwargs["callback"] = callback
        result = yield Write(ops.jobs_enqueue, kwargs)
        return Inserted(result[0], result[1], result[2] if len(result) > 2 else None)

    def claim(
        self, queue: str, worker: str, caps: str, limit: int, lease: float
    ) -> Steps[list[Job]]:
        kwargs = {"queue": queue, "worker": worker, "caps": caps, "limit": limit, "lease": lease}
        return [job_from_row(row) for row in (yield Write(ops.jobs_claim, kwargs))]

    def heartbeat(
        self, job_id: int, token: str, lease: float, progress: float | None, message: str | None
    ) -> Steps[Heartbeat]:
        kwargs: dict[str, Any] = {"id": job_id, "token": token, "lease": lease}
        if progress is not None or message is not None:
            kwargs.update(progress=progress, message=message)
        until: Heartbeat = yield Write(ops.jobs_heartbeat, kwargs)
        return until

    def complete(self, items: str) -> Steps[list[Held]]:
        rows = yield Write(ops.jobs_complete, {"items": items})
        return [Held(*row) for row in rows]

    def fail(self, job_id: int, token: str, error: str, retry: bool) -> Steps[State | None]:
        kwargs = {"id": job_id, "token": token, "error": error, "retry": retry}
        result = yield Write(ops.jobs_fail, kwargs)
        return None if result is None else result[0]

    def release(self, items: list[list[Any]]) -> Steps[list[bool]]:
        return [bool(ok) for ok in (yield Write(ops.jobs_release, {"items": items}))]

    def requeue_dead(self, ids: str | None, queue: str | None) -> Steps[int]:
        return int((yield Write(ops.jobs_requeue_dead, {"ids": ids, "queue": queue})))

    def purge(self, queue: str | None, states: str) -> Steps[int]:
        return int((yield Write(ops.jobs_purge, {"queue": queue, "states": states})))

    def prune(self, retention: float, limit: int) -> Steps[int]:
        return int((yield Write(ops.jobs_prune, {"retention": retention, "limit": limit})))

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
        kwargs = {"name": name, "queue": queue, "payload": payload, "every": every}
        kwargs.update(options=options)
        if cron is not None:
            kwargs.update(cron=cron, tz=tz)
        return float((yield Write(ops.jobs_schedule, kwargs)))

    def unschedule(self, name: str) -> Steps[bool]:
        return bool((yield Write(ops.jobs_unschedule, {"name": name})))

    def maintain(self, retention: float, limit: int) -> Steps[Maintenance]:
        done = yield Write(ops.jobs_maintain, {"retention": retention, "limit": limit})
        return Maintenance(done["reaped"], done["fired"], done["resolved"], done["pruned"])

    def cancel(self, job_id: int) -> Steps[str | None]:
        state: str | None = yield Write(ops.jobs_cancel, {"id": job_id})
        return state

    def retry(self, job_id: int) -> Steps[str | None]:
        queue: str | None = yield Write(ops.jobs_retry, {"id": job_id})
        return queue

    def configure(
        self, queue: str, paused: bool | None, rate_limit: list[Any] | None, set_rate: bool
    ) -> Steps[QueueSettings]:
        kwargs = {"queue": queue, "paused": paused, "rate_limit": rate_limit}
        row = yield Write(ops.jobs_configure, {**kwargs, "set_rate_limit": set_rate})
        return settings_from_row(queue, row)


STORE: Store = SqliteStore()
