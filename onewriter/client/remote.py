"""A core whose writer runs on another host (``tcp://`` or ``redis://``).

There is no database file here, so no lock, no election, no reader pool: writes go to
the writer over the transport, and reads too (a ``read`` request), answered from a
reader pool of the writer's host. The transports are imported only when used (the
Redis client is an optional dependency).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from ..config import Config
from ..errors import BadRequest
from ..ops import Ops
from ..sqlite.readpool import Params
from .core import CoreBase

#: Addresses of a writer on another host, instead of a database path.
REMOTE_SCHEMES = ("tcp://", "redis://", "rediss://")


class RemoteCore(CoreBase):
    """A writer on another host, reached by TCP or through Redis."""

    def __init__(self, url: str, config: Config, ops: Ops) -> None:
        super().__init__(url, config, ops)
        self.rows = RowBuilder()
        if url.startswith("tcp://"):
            from .transports.tcp import TcpTransport

            self.transport = TcpTransport(url, config, ops)
        else:
            from .transports.redis import RedisTransport

            self.transport = RedisTransport(url, config)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rows.close()


# -- the rows of remote reads ------------------------------------------------------------------


class RowBuilder:
    """Turns a remote read's columns and values back into ``sqlite3.Row`` objects, so that
    a remote read returns what a local one does.

    A Row takes its column names from a cursor's description, so one cursor per distinct
    column list, over an in-memory database that holds no data, describes them.
    """

    _MAX_SHAPES = 64

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._cursors: dict[tuple[str, ...], sqlite3.Cursor] = {}
        self._lock = threading.Lock()

    def build(self, result: Any) -> list[sqlite3.Row]:
        if not isinstance(result, dict):
            raise BadRequest(f"malformed read result: {result!r}")
        columns, values = result.get("columns"), result.get("rows")
        if not isinstance(columns, list) or not isinstance(values, list):
            raise BadRequest("a read result needs columns and rows")
        if not values:
            return []
        cursor = self._describe(tuple(str(c) for c in columns))
        return [sqlite3.Row(cursor, tuple(v)) for v in values]

    def _describe(self, columns: tuple[str, ...]) -> sqlite3.Cursor:
        with self._lock:
            cursor = self._cursors.get(columns)
            if cursor is None:
                if self._conn is None:
                    self._conn = sqlite3.connect(":memory:", check_same_thread=False)
                names = ", ".join('NULL AS "{}"'.format(c.replace('"', '""')) for c in columns)
                if len(self._cursors) >= self._MAX_SHAPES:
                    self._cursors.clear()
                cursor = self._cursors[columns] = self._conn.execute(f"SELECT {names}")
            return cursor

    def close(self) -> None:
        with self._lock:
            self._cursors.clear()
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def read_fields(sql: str, params: Params, timeout: float | None) -> dict[str, Any]:
    """A ``read`` request's fields."""
    fields: dict[str, Any] = {
        "t": "read",
        "sql": sql,
        "params": params if isinstance(params, dict) else list(params),
    }
    if timeout is not None:
        fields["timeout"] = timeout
    return fields
