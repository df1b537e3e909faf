"""Per-process reader connections: parallel WAL reads that never block an event loop.

Each reader runs in autocommit, so no read transaction outlives its statement (lingering
readers would starve the writer's checkpoints), and its authorizer refuses anything but
reading (``_readonly``; a refusal is ``READ_ONLY``). A query past its deadline is
interrupted by a progress handler. A reader that breaks is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..config import Config
from ..errors import Closed, ReadOnly, ReadTimeout
from .connect import open_connection
from .readonly import take_refusal

Params = tuple[Any, ...] | list[Any] | dict[str, Any]
T = TypeVar("T")
#: Takes a read's rows from its cursor (all of them, or as many as a limit allows).
Collect = Callable[[sqlite3.Cursor], T]

_PROGRESS_STEPS = 1000
_BROKEN_CODES = {10, 11, 14, 26}  # SQLITE_IOERR, CORRUPT, CANTOPEN, NOTADB


class _Reader:
    """One reader connection and the deadline its progress handler enforces."""

    __slots__ = ("conn", "deadline")

    def __init__(self, path: str, config: Config, max_value: int | None) -> None:
        self.conn = open_connection(path, config, "reader")  # rows by name: sqlite3.Row
        self.deadline = 0.0
        self.conn.set_progress_handler(self._progress, _PROGRESS_STEPS)
        setlimit = getattr(self.conn, "setlimit", None)  # SQLCipher's driver has none
        if max_value is not None and setlimit is not None:
            setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value)

    def _progress(self) -> int:
        return 1 if self.deadline and time.monotonic() > self.deadline else 0

    def run(self, sql: str, params: Params, timeout: float | None, collect: Collect[T]) -> T:
        self.deadline = time.monotonic() + timeout if timeout else 0.0
        try:
            cursor = self.conn.execute(sql, params)
            try:
                return collect(cursor)
            finally:
                cursor.close()
        except sqlite3.DatabaseError as exc:
            refusal = take_refusal(exc)
            if refusal is not None:
                raise ReadOnly(f"readers only read; refused: {refusal.reason}") from None
            interrupted = isinstance(exc, sqlite3.OperationalError) and "interrupt" in str(exc)
            if interrupted and self.deadline and time.monotonic() > self.deadline:
                raise ReadTimeout(f"read interrupted after {timeout:.3f} s: {sql[:200]}") from None
            raise
        finally:
            self.deadline = 0.0


def fetch_all(cursor: sqlite3.Cursor) -> list[sqlite3.Row]:
    rows: list[sqlite3.Row] = cursor.fetchall()
    return rows


class ReadPool:
    """Up to ``size`` reader connections, opened lazily, shared by this process's threads.

    ``max_value`` caps the bytes of any one value a read may build (SQLite's
    ``SQLITE_LIMIT_LENGTH``), for reads whose results must fit in a frame anyway.
    """

    def __init__(self, path: str, config: Config, *, max_value: int | None = None) -> None:
        self.path = path
        self.config = config
        self.max_value = max_value
        self.size = config.read_pool_size
        self._idle: queue.LifoQueue[_Reader] = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self.replaced = 0

    def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run one read statement on this thread; rows come back with columns by name."""
        return self.run(sql, params, fetch_all, timeout=timeout)

    def run(
        self, sql: str, params: Params, collect: Collect[T], *, timeout: float | None = None
    ) -> T:
        """Run one read statement on this thread; ``collect`` takes its rows."""
        limit = self.config.read_timeout if timeout is None else timeout
        reader = self._checkout()
        try:
            return reader.run(sql, params, limit, collect)
        except sqlite3.DatabaseError as exc:
            if not self._is_broken(reader, exc):
                raise
            reader = self._replace(reader)
            return reader.run(sql, params, limit, collect)
        finally:
            self._checkin(reader)

    async def read_async(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """The same read on one of the pool's threads; the event loop keeps running."""
        return await self.run_async(sql, params, fetch_all, timeout=timeout)

    async def run_async(
        self, sql: str, params: Params, collect: Collect[T], *, timeout: float | None = None
    ) -> T:
        """:meth:`run` on one of the pool's threads; the event loop keeps running."""
        executor = self._get_executor()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            executor, lambda: self.run(sql, params, collect, timeout=timeout)
        )

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._closed:
            raise Closed("the read pool is closed")
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="onewriter-read")
            return self._executor

    def _checkout(self) -> _Reader:
        if self._closed:
            raise Closed("the read pool is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._opened < self.size:
                self._opened += 1
                try:
                    return _Reader(self.path, self.config, self.max_value)
                except BaseException:
                    self._opened -= 1
                    raise
        return self._idle.get()

    def _checkin(self, reader: _Reader) -> None:
        if self._closed:
            reader.conn.close()
        else:
            self._idle.put(reader)

    def _is_broken(self, reader: _Reader, exc: sqlite3.DatabaseError) -> bool:
        if isinstance(exc, sqlite3.ProgrammingError):
            return True
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BROKEN_CODES:
            return True
        try:
            reader.conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return True
        return False

    def _replace(self, reader: _Reader) -> _Reader:
        with contextlib.suppress(sqlite3.Error):
            reader.conn.close()
        self.replaced += 1
        return _Reader(self.path, self.config, self.max_value)

    def close(self) -> None:
        """Close idle readers now and busy ones as they come back."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        while True:
            try:
                reader = self._idle.get_nowait()
            except queue.Empty:
                break
            reader.conn.close()
