"""The queue on PostgreSQL: :class:`PgJobQueue` and its asyncio twin
:class:`AsyncPgJobQueue`, the same API as the SQLite store
(:class:`~onewriter.jobs.JobStore`) over a pool of psycopg 3 connections, answering the
requests of :class:`~onewriter.jobs.postgres.store.PgStore`.

Claims take rows with ``FOR UPDATE SKIP LOCKED``, so any number of processes and machines
(several ``onewriter jobs serve`` instances) share one database without a single writer.
Enqueues ``NOTIFY`` their queue; a claim that waits ``LISTEN``s (one connection per queue
object) and is woken at once, polling only for jobs whose time comes (delays, backoffs,
expired leases). Needs the ``postgres`` extra.
"""

from __future__ import annotations

import warnings
from types import TracebackType
from typing import Any, ClassVar

from ...errors import Closed
from ..api.aio import AsyncJobStore
from ..api.flows import Flows
from ..api.sync import JobStore
from ..model import DEFAULT_PAYLOAD_LIMIT, DEFAULT_RETENTION
from .run import (
    AsyncListener,
    AsyncPool,
    Pool,
    ThreadListener,
    open_async_pool,
    open_pool,
    read,
    read_async,
    run,
    run_async,
)
from .steps import Statement
from .store import STORE, Transaction

DEFAULT_POOL_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 30.0


def _never_closed(obj: object, url: str) -> None:
    if not getattr(obj, "_closed", True):
        warnings.warn(f"job queue on {url!r} was never closed", ResourceWarning, stacklevel=2)


class PgJobQueue(JobStore):
    """The queue on PostgreSQL, from synchronous code. Thread-safe; close it when done.

    ::

        with PgJobQueue("postgresql://app@db/app") as queue:   # creates the tables
            queue.enqueue("emails", {"to": "a@example.com"})
            for job in queue.claim("emails", limit=10):
                queue.complete(job.id, job.token)

    ``url`` is any libpq connection string. ``pool_size`` bounds the connections this
    object opens (plus one more while a claim waits, to ``LISTEN``).
    """

    first_poll: ClassVar[float] = 0.01
    max_poll: ClassVar[float] = 0.25

    def __init__(
        self,
        url: str,
        *,
        payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
        retention: float = DEFAULT_RETENTION,
        worker: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        setup: bool = True,
    ) -> None:
        super().__init__(
            Flows(STORE, payload_limit=payload_limit, retention=retention, worker=worker)
        )
        self.url = url
        self._pool: Pool = open_pool(url, pool_size, connect_timeout)
        self._closed = False
        self._listener = ThreadListener(url, self._waker)
        if setup:
            try:
                self.setup()
            except BaseException:
                self.close()
                raise

    def _live_pool(self) -> Pool:
        if self._closed:
            raise Closed("this job queue is closed")
        return self._pool

    def _execute(self, request: Transaction | Statement) -> Any:
        if isinstance(request, Statement):
            return read(self._live_pool(), request)
        return run(self._live_pool(), request.steps)

    def _before_waiting(self) -> None:
        self._listener.start()

    def close(self) -> None:
        """Stop listening and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._listener.close()
        self._pool.close()

    def __enter__(self) -> PgJobQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        _never_closed(self, getattr(self, "url", "?"))


class AsyncPgJobQueue(AsyncJobStore):
    """The queue on PostgreSQL, from asyncio code: the twin of :class:`PgJobQueue`. The
    pool opens and the tables are created on first use (or by ``await queue.setup()``);
    ``await queue.close()`` (or ``async with``) when done.
    """

    first_poll: ClassVar[float] = PgJobQueue.first_poll
    max_poll: ClassVar[float] = PgJobQueue.max_poll

    def __init__(
        self,
        url: str,
        *,
        payload_limit: int | None = DEFAULT_PAYLOAD_LIMIT,
        retention: float = DEFAULT_RETENTION,
        worker: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(
            Flows(STORE, payload_limit=payload_limit, retention=retention, worker=worker)
        )
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: AsyncPool | None = None
        self._closed = False
        self._listener = AsyncListener(url, self._waker)

    async def _open(self) -> None:
        if self._closed:
            raise Closed("this job queue is closed")
        if self._pool is None:
            self._pool = await open_async_pool(self.url, self.pool_size, self.connect_timeout)

    async def _live_pool(self) -> AsyncPool:
        if self._pool is None or self._closed:
            await self._open()
        assert self._pool is not None
        return self._pool

    async def _execute(self, request: Transaction | Statement) -> Any:
        if isinstance(request, Statement):
            return await read_async(await self._live_pool(), request)
        return await run_async(await self._live_pool(), request.steps)

    def _before_waiting(self) -> None:
        self._listener.start()

    async def health(self) -> dict[str, Any]:
        """The server answers; its version."""
        version = Statement("SELECT current_setting('server_version')", {})
        rows = await read_async(await self._live_pool(), version)
        return {"store": "postgresql", "server_version": rows[0][0]}

    async def writer_stats(self) -> dict[str, Any] | None:
        return None  # every connection writes: there is no one writer to report on

    async def close(self) -> None:
        """Stop listening and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._listener.close()
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> AsyncPgJobQueue:
        try:
            await self.setup()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            _never_closed(self, getattr(self, "url", "?"))
