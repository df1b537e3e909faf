"""The queue on SQLite, for synchronous code: :class:`JobQueue` over a
:class:`~onewriter.Database`. Its asyncio twin is :class:`~onewriter.jobs.AsyncJobQueue`.

Writes are the ops of :mod:`onewriter.jobs.sqlite.ops`, run by the one writer; reads
(get, stats, dead letters) run on this process's readers. The API itself is
:class:`~onewriter.jobs.JobStore`, shared with the PostgreSQL store; this class answers
the requests of :class:`~onewriter.jobs.sqlite.store.SqliteStore`.
"""

from __future__ import annotations

from typing import Any

from ...database import Database
from ...errors import UnknownOp
from ..api.flows import Flows
from ..api.sync import JobStore
from ..model import DEFAULT_PAYLOAD_LIMIT, DEFAULT_RETENTION
from .store import STORE, Read, Write


def unknown_op_hint(exc: UnknownOp) -> UnknownOp:
    return UnknownOp(
        f"{exc.message}; the writer serving this database must include the queue's ops: "
        "ops.include(onewriter.jobs.jobs_ops)"
    )


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
            Flows(STORE, payload_limit=payload_limit, retention=retention, worker=worker)
        )
        self.db = db
        if setup:
            self.setup()

    def _execute(self, request: Write | Read) -> Any:
        if isinstance(request, Read):
            return self.db.read(request.sql, request.params or ())
        try:
            return self.db.write(request.op, **request.kwargs)
        except UnknownOp as exc:
            raise unknown_op_hint(exc) from exc
