"""Running the PostgreSQL store's statements: one transaction per write (retried on the
conflicts PostgreSQL reports under concurrency), reads on pooled autocommit connections,
and a listener that turns ``NOTIFY`` into wake-ups of waiting claims. Sync and asyncio
twins of each, driving the same step generators of :mod:`onewriter.jobs.postgres.steps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ...errors import WriterUnavailable
from ..wake import AsyncWaker, ThreadWaker
from . import sql
from .steps import Result, Statement, Steps

log = logging.getLogger("onewriter.jobs.postgres")

T = TypeVar("T")

Pool = ConnectionPool[psycopg.Connection[TupleRow]]
AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]

#: Transactions that lost a race (a deadlock, a unique key taken meanwhile) run again.
_RETRYABLE = (
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.UniqueViolation,
)
_TRIES = 3
_LISTEN_BACKOFF_MAX = 5.0
#: How often the sync listener looks at its stop flag.
_LISTEN_TICK = 0.2


@contextlib.contextmanager
def unavailable_on_connection_errors() -> Iterator[None]:
    """A server out of reach (down, restarting, pool exhausted) is ``WRITER_UNAVAILABLE``
    (HTTP 503): callers back off and retry, as with an unreachable SQLite writer."""
    try:
        yield
    except _RETRYABLE:
        raise  # deadlocks and serialization failures are OperationalErrors too
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise WriterUnavailable(f"PostgreSQL is unavailable: {exc}") from exc


def _execute(conn: psycopg.Connection[Any], statement: Statement) -> Result:
    cursor = conn.execute(statement.sql, statement.params)
    rows = cursor.fetchall() if cursor.description is not None else []
    return Result(rows, cursor.rowcount)


async def _execute_async(conn: psycopg.AsyncConnection[Any], statement: Statement) -> Result:
    cursor = await conn.execute(statement.sql, statement.params)
    rows = await cursor.fetchall() if cursor.description is not None else []
    return Result(rows, cursor.rowcount)


@dataclass(frozen=True, slots=True)
class _Finished(Generic[T]):
    value: T


def _advance(steps: Steps[T], result: Result | None) -> Statement | _Finished[T]:
    """Send ``result`` (none at the start); the write's next statement, or its value."""
    try:
        return next(steps) if result is None else steps.send(result)
    except StopIteration as stop:
        return _Finished(stop.value)


def _drive(conn: psycopg.Connection[TupleRow], steps: Steps[T]) -> T:
    step = _advance(steps, None)
    if isinstance(step, Statement) and step.alone:
        step = _advance(steps, _execute(conn, step))
        assert isinstance(step, _Finished), "a statement marked alone was followed by another"
    if isinstance(step, Statement):
        with conn.transaction():
            while isinstance(step, Statement):
                step = _advance(steps, _execute(conn, step))
    return step.value


async def _drive_async(conn: psycopg.AsyncConnection[TupleRow], steps: Steps[T]) -> T:
    step = _advance(steps, None)
    if isinstance(step, Statement) and step.alone:
        step = _advance(steps, await _execute_async(conn, step))
        assert isinstance(step, _Finished), "a statement marked alone was followed by another"
    if isinstance(step, Statement):
        async with conn.transaction():
            while isinstance(step, Statement):
                step = _advance(steps, await _execute_async(conn, step))
    return step.value


def run_on(conn: psycopg.Connection[Any], steps: Steps[T]) -> T:
    """Run a write's statements on the caller's connection, inside whatever transaction
    the caller has open (it commits or rolls back; nothing is retried here)."""
    step = _advance(steps, None)
    while isinstance(step, Statement):
        step = _advance(steps, _execute(conn, step))
    return step.value


async def run_on_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T]) -> T:
    """The asyncio twin of :func:`run_on`."""
    step = _advance(steps, None)
    while isinstance(step, Statement):
        step = _advance(steps, await _execute_async(conn, step))
    return step.value


def open_pool(url: str, size: int, timeout: float) -> Pool:
    """A pool of autocommit connections (a read is one round trip; writes open their own
    transaction), open and connected, or ``WRITER_UNAVAILABLE`` after ``timeout`` s."""
    pool: Pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max(1, size),
        kwargs={"autocommit": True},
        open=False,
        timeout=timeout,
        name="onewriter-jobs",
    )
    try:
        with unavailable_on_connection_errors():
            pool.open(wait=True, timeout=timeout)
    except BaseException:
        pool.close()
        raise
    return pool


async def open_async_pool(url: str, size: int, timeout: float) -> AsyncPool:
    """The asyncio twin of :func:`open_pool`."""
    pool: AsyncPool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max(1, size),
        kwargs={"autocommit": True},
        open=False,
        timeout=timeout,
        name="onewriter-jobs",
    )
    try:
        with unavailable_on_connection_errors():
            await pool.open(wait=True, timeout=timeout)
    except BaseException:
        await pool.close()
        raise
    return pool


def run(pool: Pool, make_steps: Callable[[], Steps[T]]) -> T:
    """Run a write in one transaction (again, from the start, if it lost a race); a write
    of one statement ``alone`` runs as that statement only."""
    for attempt in range(1, _TRIES + 1):
        try:
            with unavailable_on_connection_errors(), pool.connection() as conn:
                return _drive(conn, make_steps())
        except _RETRYABLE as exc:
            if attempt == _TRIES:
                raise
            log.info("transaction lost a race (%s); running it again", type(exc).__name__)
    raise AssertionError("unreachable")


async def run_async(pool: AsyncPool, make_steps: Callable[[], Steps[T]]) -> T:
    """The asyncio twin of :func:`run`."""
    for attempt in range(1, _TRIES + 1):
        try:
            with unavailable_on_connection_errors():
                async with pool.connection() as conn:
                    return await _drive_async(conn, make_steps())
        except _RETRYABLE as exc:
            if attempt == _TRIES:
                raise
            log.info("transaction lost a race (%s); running it again", type(exc).__name__)
    raise AssertionError("unreachable")


def read(pool: Pool, statement: Statement) -> list[Any]:
    with unavailable_on_connection_errors(), pool.connection() as conn:
        return conn.execute(statement.sql, statement.params).fetchall()


async def read_async(pool: AsyncPool, statement: Statement) -> list[Any]:
    with unavailable_on_connection_errors():
        async with pool.connection() as conn:
            cursor = await conn.execute(statement.sql, statement.params)
            return await cursor.fetchall()


class ThreadListener:
    """``LISTEN`` on a connection of its own, in a thread: each notification wakes the
    claims waiting on its queue. Reconnects with a backoff if the connection drops
    (waiting claims meanwhile fall back on polling)."""

    def __init__(self, url: str, waker: ThreadWaker) -> None:
        self.url = url
        self.waker = waker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="onewriter-jobs-listen", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {sql.CHANNEL}")
                    backoff = 0.1
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=_LISTEN_TICK):
                            self.waker.notify(notice.payload)
            except psycopg.Error as exc:
                log.warning("listening for new jobs failed (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _LISTEN_BACKOFF_MAX)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_LISTEN_TICK + 5.0)


class AsyncListener:
    """The asyncio twin of :class:`ThreadListener`: a task of the event loop."""

    def __init__(self, url: str, waker: AsyncWaker) -> None:
        self.url = url
        self.waker = waker
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._connection() as conn:
                    backoff = 0.1
                    async for notice in conn.notifies():
                        self.waker.notify(notice.payload)
            except psycopg.Error as exc:
                log.warning("listening for new jobs failed (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _LISTEN_BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        try:
            await conn.execute(f"LISTEN {sql.CHANNEL}")
            yield conn
        finally:
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
