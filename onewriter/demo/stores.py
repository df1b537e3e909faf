"""Where a worker's reads and writes go: through onewriter, or naively to SQLite itself.

Both stores read the same way (this process's reader pool). They differ only in the
write path, which is what the benchmark compares: the onewriter store sends each op to
the one writer (or, in direct mode, runs it in the worker under the write turn); the
naive store runs it on the worker's own write connection, in a ``BEGIN IMMEDIATE``
transaction, waiting in SQLite's busy handler for the other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..config import Config
from ..database import AsyncDatabase
from ..errors import OneWriterError, OpFailed
from ..ops import Op
from ..sqlite.connect import open_connection
from ..sqlite.readpool import Params, ReadPool
from .posts import ops


class SqliteBusy(OneWriterError):
    """SQLite stayed locked past busy_timeout (naive mode only: onewriter never shows this)."""

    code = "SQLITE_BUSY"
    http_status = 503


class Store(Protocol):
    """What the posts app needs from its database."""

    mode: str

    async def open(self) -> None: ...

    async def read(self, sql: str, params: Params = ()) -> list[sqlite3.Row]: ...

    async def write(self, op: Op[..., Any], /, **kwargs: Any) -> Any: ...

    async def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class OneWriterStore:
    """Reads on this worker's pool; every write through the one writer (the primary), or
    with ``direct`` in this worker under the write turn (on a thread: the loop never
    blocks)."""

    mode = "onewriter"

    def __init__(self, path: str, config: Config, *, direct: bool = False) -> None:
        if direct:
            self.mode = "direct"
            config = config.replace(writes="direct")
        else:
            config = config.replace(role="client")
        self.db = AsyncDatabase(path, ops, config)

    async def open(self) -> None:
        await self.db.start()

    async def read(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self.db.read(sql, params)

    async def write(self, op: Op[..., Any], /, **kwargs: Any) -> Any:
        return await self.db.write(op, **kwargs)

    async def stats(self) -> dict[str, Any]:
        """The writer's figures."""
        return await self.db.stats()

    async def close(self) -> None:
        await self.db.close()


class NaiveStore:
    """Reads on this worker's pool; writes on this worker's own connection.

    The connection has the same PRAGMAs as onewriter's (busy_timeout, synchronous, cache,
    mmap) and SQLite's own automatic checkpoints. One thread owns it, so the event loop
    never blocks and each worker has one write in flight, as a typical app would.
    """

    mode = "naive"

    def __init__(self, path: str, config: Config) -> None:
        self.path = path
        self.config = config
        self.reads = ReadPool(path, config)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="naive-writer")
        self._conn: sqlite3.Connection | None = None
        self._counts_lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    async def open(self) -> None:
        await self._on_writer_thread(self._connection)

    async def read(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self.reads.read_async(sql, params)

    async def write(self, op: Op[..., Any], /, **kwargs: Any) -> Any:
        return await self._on_writer_thread(functools.partial(self._write, op, kwargs))

    async def stats(self) -> dict[str, Any]:
        """This worker's own write figures (there is no shared writer to ask)."""
        with self._counts_lock:
            return {name: self.counts[name] for name in ("writes", "busy_errors", "failed")}

    async def close(self) -> None:
        await self._on_writer_thread(self._close_connection)
        self._executor.shutdown(wait=True)
        self.reads.close()

    async def _on_writer_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = open_connection(self.path, self.config, "reader")
            conn.set_authorizer(None)  # this naive store writes on it: not a reader any more
            conn.execute("PRAGMA query_only = OFF")
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _write(self, op: Op[..., Any], kwargs: dict[str, Any]) -> Any:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = op(conn, **kwargs)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback(conn)
            if "locked" in str(exc) or "busy" in str(exc):
                self._count("busy_errors")
                raise SqliteBusy(f"{op.name}: {exc}") from None
            self._count("failed")
            raise OpFailed(f"{op.name} raised OperationalError: {exc}") from None
        except Exception as exc:
            self._rollback(conn)
            self._count("failed")
            raise OpFailed(f"{op.name} raised {type(exc).__name__}: {exc}") from None
        self._count("writes")
        return result

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self.counts[name] += 1

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")


def open_store(path: str, config: Config, *, naive: bool, direct: bool = False) -> Store:
    """The store a worker uses in the chosen mode."""
    return NaiveStore(path, config) if naive else OneWriterStore(path, config, direct=direct)
