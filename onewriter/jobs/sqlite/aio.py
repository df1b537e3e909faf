"""The queue on SQLite, for asyncio code: :class:`AsyncJobQueue` over an
:class:`~onewriter.AsyncDatabase`, the twin of :class:`~onewriter.jobs.JobQueue`."""

from __future__ import annotations

from typing import Any

from ...database import AsyncDatabase
from ...errors import UnknownOp
from ..api.aio import AsyncJobStore
from ..api.calls import Call, Calls, unknown_op_hint
from ..model import DEFAULT_PAYLOAD_LIMIT, DEFAULT_RETENTION
from .queue import SQLITE_READS


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
            Calls(payload_limit=payload_limit, retention=retention, worker=worker), SQLITE_READS
        )
        self.db = db

    async def _write_now(self, call: Call) -> Any:
        op, kwargs = call
        try:
            return await self.db.write(op, **kwargs)
        except UnknownOp as exc:
            raise unknown_op_hint(exc) from exc

    async def _read(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        return await self.db.read(statement, params or ())

    async def health(self) -> dict[str, Any]:
        """Readers and the writer answer; the writer's pid."""
        await self.db.read("SELECT 1")
        writer = await self.db.stats()
        return {"writer_pid": writer.get("pid")}

    async def writer_stats(self) -> dict[str, Any] | None:
        return await self.db.stats()
