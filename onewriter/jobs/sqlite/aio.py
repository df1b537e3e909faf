"""The queue on SQLite, for asyncio code: :class:`AsyncJobQueue` over an
:class:`~onewriter.AsyncDatabase`, the twin of :class:`~onewriter.jobs.JobQueue`."""

from __future__ import annotations

from typing import Any

from ...database import AsyncDatabase
from ...errors import UnknownOp
from ..api.aio import AsyncJobStore
from ..api.flows import Flows
from ..model import DEFAULT_PAYLOAD_LIMIT, DEFAULT_RETENTION
from .queue import unknown_op_hint
from .store import STORE, Read, Write


class AsyncJobQueue(AsyncJobStore):
    """The queue, from asyncio code: the twin of :class:`JobQueue`, every method a
    coroutine. The tables are created on first use (or by ``await queue.setup()``)."""

    def __init__(
        self,
        db: AsyncDatabase,
        *,
        payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
        retention: float = DEFAULT_RETENTION,
        worker: str | None = None,
    ) -> None:
        super().__init__(
            Flows(STORE, payload_limit=payload_limit, retention=retention, worker=worker)
        )
        self.db = db

    async def _execute(self, request: Write | Read) -> Any:
        if isinstance(request, Read):
            return await self.db.read(request.sql, request.params or ())
        try:
            return await self.db.write(request.op, **request.kwargs)
        except UnknownOp as exc:
            raise unknown_op_hint(exc) from exc

    async def health(self) -> dict[str, Any]:
        """Readers and the writer answer; the writer's pid."""
        await self.db.read("SELECT 1")
        writer = await self.db.stats()
        return {"writer_pid": writer.get("pid")}

    async def writer_stats(self) -> dict[str, Any] | None:
        return await self.db.stats()
