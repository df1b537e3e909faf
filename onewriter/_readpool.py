"""Per-process reader connections: parallel WAL reads that never block an event loop.

Each reader is ``query_only`` and runs in autocommit, so no read transaction outlives
its statement (lingering readers would starve the writer's checkpoints). A query past
its deadline is interrupted by a progress handler. A reader that breaks is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._config import Config
from ._errors import Closed, ReadTimeout
from ._sqlite import open_connection

Params = tuple[Any, ...] | list[Any] | dict[str, Any]

_PROGRESS_STEPS = 1000
_BROKEN_CODES = {10, 11, 14, 26}  # SQLITE_IOERR, CORRUPT, CANTOPEN, NOTADB


class _Reader:
    """One reader connection and the deadline its progress handler enforces."""

    __slots__ = ("conn", "deadline")

    def __init__(self, path: str, config: Config) -> None:
        self.conn = open_connection(path, config, "reader")  # rows by name: sqlite3.Row
        self.deadline = 0.0
        self.conn.set_progress_handler(self._progress, _PROGRESS_STEPS)

    def _progress(self) -> int:
        return 1 if self.deadline and time.monotonic() > self.deadline else 0

    def run(self, sql: str, params: Params, timeout: float | None) -> list[sqlite3.Row]:
        self.deadline = time.monotonic() + timeout if timeout else 0.0
        try:
            cursor = self.conn.execute(sql, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()
        except sqlite3.OperationalError as exc:
            if self.deadline and time.monotonic() > self.deadline and "interrupt" in str(exc):
                raise ReadTimeout(f"read interrupted after {timeout:.3f} s: {sql[:200]}") from None
            raise
        finally:
            self.deadline = 0.0


class ReadPool:
    """Up to ``size`` reader connections, opened lazily, shared by this process's threads."""

    def __init__(self, path: str, config: Config) -> None:
        self.path = path
        self.config = config
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
        limit = self.config.read_timeout if timeout is None else timeout
        reader = self._checkout()
        try:
            return reader.run(sql, params, limit)
        except sqlite3.DatabaseError as exc:
            if not self._is_broken(reader, exc):
                raise
            reader = self._replace(reader)
            return reader.run(sql, params, limit)
        finally:
            self._checkin(reader)

    async def read_async(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """The same read on one of the pool's threads; the event loop keeps running."""
        executor = self._get_executor()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: self.read(sql, params, timeout=timeout))

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
                    return _Reader(self.path, self.config)
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
        return _Reader(self.path, self.config)

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
