"""This process's reader connections for DB-API reads outside a transaction.

Separate from ``Database.read``'s pool because a cursor needs what that pool does not
give: the column names of an empty result, the standard module's errors and the
functions registered with ``create_function``. Like that pool, each reader refuses
anything but reading (a refused write is ``SQLITE_READONLY``, as from a ``query_only``
connection, so the statement goes on to the writer) and runs in autocommit, and a read
fetches all its rows at once: no read transaction outlives its statement (lingering
readers starve checkpoints).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from .._config import Config
from .._errors import Closed, ReadTimeout
from .._readonly import as_readonly
from .._sqlite import open_connection

_PROGRESS_STEPS = 1000
_BROKEN_CODES = {10, 11, 14, 26}  # SQLITE_IOERR, CORRUPT, CANTOPEN, NOTADB


class Functions:
    """SQL functions registered with ``create_function``, for every reader of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], tuple[Callable[..., Any] | None, bool]] = {}
        self.version = 0

    def add(
        self, name: str, narg: int, func: Callable[..., Any] | None, deterministic: bool
    ) -> None:
        with self._lock:
            self._items[(name, narg)] = (func, deterministic)
            self.version += 1

    def register_on(self, conn: sqlite3.Connection) -> int:
        """Register them all on ``conn``; returns the version registered."""
        with self._lock:
            items = list(self._items.items())
            version = self.version
        for (name, narg), (func, deterministic) in items:
            conn.create_function(name, narg, func, deterministic=deterministic)
        return version


#: A cursor's ``description``: one 7-tuple per column, the name first.
Description = tuple[tuple[Any, ...], ...]


class ReadResult:
    __slots__ = ("description", "rowcount", "rows")

    def __init__(
        self, description: Description | None, rows: list[tuple[Any, ...]], rowcount: int
    ) -> None:
        self.description = description
        self.rows = rows
        self.rowcount = rowcount


class _Reader:
    __slots__ = ("conn", "deadline", "functions")

    def __init__(self, path: str, config: Config) -> None:
        self.conn = open_connection(path, config, "reader")
        self.conn.row_factory = None  # plain tuples; the cursor applies its own factory
        self.deadline = 0.0
        self.functions = -1
        self.conn.set_progress_handler(self._progress, _PROGRESS_STEPS)

    def _progress(self) -> int:
        return 1 if self.deadline and time.monotonic() > self.deadline else 0


class Readers:
    """Up to ``read_pool_size`` reader connections, opened lazily, shared by threads."""

    def __init__(self, path: str, config: Config, functions: Functions) -> None:
        self.path = path
        self.config = config
        self.functions = functions
        self._idle: list[_Reader] = []
        self._opened = 0
        self._available = threading.Condition(threading.Lock())
        self._waiting = 0
        self._closed = False

    def run(self, sql: str, params: Any, *, retry: bool = True) -> ReadResult:
        """Run one statement on a reader; SQLite's errors come out unchanged. A reader
        that broke (I/O error, file replaced) is closed and the read tried once more."""
        reader = self._checkout()
        try:
            result = self._run(reader, sql, params)
        except sqlite3.DatabaseError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in _BROKEN_CODES:
                self._checkin(reader)
                raise
            self._discard(reader)
            if not retry:
                raise
            return self.run(sql, params, retry=False)
        except BaseException:
            self._checkin(reader)
            raise
        self._checkin(reader)
        return result

    def _run(self, reader: _Reader, sql: str, params: Any) -> ReadResult:
        if reader.functions != self.functions.version:
            reader.functions = self.functions.register_on(reader.conn)
        timeout = self.config.read_timeout
        reader.deadline = time.monotonic() + timeout if timeout else 0.0
        try:
            cursor = reader.conn.execute(sql, params)
            try:
                description = cursor.description
                rows = cursor.fetchall() if description else []
                return ReadResult(description, rows, cursor.rowcount)
            finally:
                cursor.close()
        except sqlite3.DatabaseError as exc:
            expired = reader.deadline and time.monotonic() > reader.deadline
            if expired and "interrupt" in str(exc):
                raise ReadTimeout(f"read interrupted after {timeout:.3f} s: {sql[:200]}") from None
            if (refused := as_readonly(exc)) is not exc:
                raise refused from None
            raise
        finally:
            reader.deadline = 0.0

    def _checkout(self) -> _Reader:
        if self._closed:
            raise Closed("the readers are closed")
        idle = self._idle
        with contextlib.suppress(IndexError):
            return idle.pop()  # the common case: atomic, no lock
        with self._available:
            while True:
                with contextlib.suppress(IndexError):
                    return idle.pop()
                if self._closed:
                    raise Closed("the readers are closed")
                if self._opened < self.config.read_pool_size:
                    self._opened += 1
                    break
                self._waiting += 1
                try:
                    self._available.wait()
                finally:
                    self._waiting -= 1
        try:
            return _Reader(self.path, self.config)
        except BaseException:
            self._discard(None)
            raise

    def _checkin(self, reader: _Reader) -> None:
        if self._closed:
            reader.conn.close()
            return
        with self._available:
            self._idle.append(reader)
            if self._waiting:
                self._available.notify()

    def _discard(self, reader: _Reader | None) -> None:
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.conn.close()
        with self._available:
            self._opened -= 1
            self._available.notify()

    def close(self) -> None:
        """Close idle readers now and busy ones as they come back."""
        self._closed = True
        with self._available:
            idle, self._idle = self._idle, []
            self._available.notify_all()
        for reader in idle:
            reader.conn.close()
