"""The queue on SQLite, for synchronous code: :class:`JobQueue` over a
:class:`~onewriter.Database`. Its asyncio twin is :class:`~onewriter.jobs.AsyncJobQueue`.

Writes are the ops of :mod:`onewriter.jobs._ops`, run by the one writer; reads (get,
stats, dead letters) run on this process's readers. The API itself is
:class:`~onewriter.jobs._store.JobStore`, shared with the PostgreSQL store.
"""

from __future__ import annotations

from typing import Any

from ...database import Database
from ...errors import UnknownOp
from ..api.calls import Call, Calls, unknown_op_hint
from ..api.sync import JobStore, Reads
from ..model import DEFAULT_PAYLOAD_LIMIT, DEFAULT_RETENTION
from . import sql

SQLITE_READS = Reads.of(sql)


class JobQueue(JobStore):
    """The queue, from synchronous code. Thread-safe (as the database is).

    ::

        ops = onewriter.Ops()
        ops.include(jobs_ops)
        db = onewriter.connect("app.db", ops=ops)
        queue = JobQueue(db)
        queue.enqueue("emails", {"to": "a@example.com"})
        for job in queue.claim("emails", limit=10):
            queue.complete(job.id, job.token)
    """

    def __init__(
        self,
        db: Database,
        *,
        payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
        retention: float = DEFAULT_RETENTION,
        worker: str | None = None,
        setup: bool = True,
    ) -> None:
        super().__init__(
            Calls(payload_limit=payload_limit, retention=retention, worker=worker), SQLITE_READS
        )
        self.db = db
        if setup:
            self.setup()

    def _write(self, call: Call) -> Any:
        op, kwargs = call
        try:
            return self.db.write(op, **kwargs)
        except UnknownOp as exc:
            raise unknown_op_hint(exc) from exc

    def _read(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        return self.db.read(statement, params or ())
