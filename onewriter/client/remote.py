"""Producers on other machines: the faces that reach a writer by address, and the writer's
side of the remote transports.

``connect("tcp://host:7480", token=...)`` and ``connect("redis://host:6379/0", queue=...)``
return a :class:`Database` (or :class:`AsyncDatabase`) whose core has no local file: no
lock, no election, no reader pool. Writes go to the writer over the transport; reads are
sent there too (a ``read`` request) and run on a reader pool of the writer's host.

The transports live in ``_tcp.py``, ``_redis.py`` and ``_redis_client.py``; they are
imported only when used (the Redis client is an optional dependency).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import fork as _fork
from ..config import Config
from ..database import AsyncDatabase, Database, make_config
from ..errors import BadRequest
from ..ops import Ops
from ..sqlite.readpool import Params
from ..writer.endpoints.reads import RemoteReads
from .channel import AsyncChannel, SyncChannel
from .core import Core

if TYPE_CHECKING:
    from ..writer.endpoints.redis import RedisConsumer
    from ..writer.endpoints.tcp import TcpListener
    from ..writer.service import WriterService

log = logging.getLogger("onewriter.remote")


# -- addresses ------------------------------------------------------------------------------


def tcp_address(url: str) -> tuple[str, int]:
    """The host and port of ``tcp://HOST:PORT`` (IPv6 hosts in brackets)."""
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"expected tcp://HOST:PORT, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if port is None:
        raise ValueError(f"{url!r} names no port")
    return parts.hostname, port


def tcp_url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


# -- the rows of remote reads, on the client's side --------------------------------------------


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
    fields: dict[str, Any] = {"t": "read", "sql": sql, "params": _wire_params(params)}
    if timeout is not None:
        fields["timeout"] = timeout
    return fields


def _wire_params(params: Params) -> list[Any] | dict[str, Any]:
    return params if isinstance(params, dict) else list(params)


# -- the writer's side ------------------------------------------------------------------------


class RemoteEndpoints:
    """The writer's network faces, as configured: a TCP listener and a Redis consumer."""

    def __init__(self, service: WriterService) -> None:
        self.service = service
        self.reads = RemoteReads(service)
        self.tcp: TcpListener | None = None
        self.redis: RedisConsumer | None = None

    async def start(self) -> None:
        config = self.service.config
        if config.listen is not None:
            from ..writer.endpoints.tcp import TcpListener

            self.tcp = TcpListener(self.service, self.reads)
            await self.tcp.start()
        if config.redis_url is not None:
            from ..writer.endpoints.redis import RedisConsumer

            self.redis = RedisConsumer(self.service, self.reads)
            self.redis.start()

    def describe(self) -> list[str]:
        """Where this writer can be reached from other hosts, as ``name=value`` words."""
        words = []
        if self.tcp is not None:
            words.append(f"listen={self.tcp.url}")
        if self.redis is not None:
            words += [f"redis={self.redis.redacted_url}", f"queue={self.redis.queue}"]
        return words

    def begin_drain(self) -> None:
        """Take no new connections or Redis requests; those already taken finish."""
        if self.tcp is not None:
            self.tcp.stop_listening()
        if self.redis is not None:
            self.redis.stop()

    def close(self) -> None:
        """Wait for the Redis consumer's last answers, then close the reader pool."""
        if self.redis is not None:
            self.redis.close()
        self.reads.close()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.reads.stats()
        if self.tcp is not None:
            data["tcp"] = self.tcp.stats()
        if self.redis is not None:
            data["redis"] = self.redis.stats()
        return data


async def start_endpoints(service: WriterService) -> RemoteEndpoints:
    """Start the remote faces that ``service.config`` asks for."""
    endpoints = RemoteEndpoints(service)
    try:
        await endpoints.start()
    except BaseException:
        endpoints.begin_drain()
        endpoints.close()
        raise
    return endpoints


# -- the client's side: a core and faces with the writer on another host ----------------------


class RemoteCore(Core):
    """A core whose writer runs on another host.

    There is no database file here, so no lock, no election and no reader pool:
    ``Core.__init__`` is deliberately not called, as everything it opens belongs to a
    local file. Each transport says how to make its channels.
    """

    def __init__(self, url: str, config: Config, ops: Ops) -> None:
        self.database = url
        self.db_path = url
        self.config = config
        self.ops = ops
        self.pid = os.getpid()
        self.forks = _fork.generation()
        self.local_writer = None
        self.closed = False
        self.rows = RowBuilder()

    def running_local_writer(self) -> None:
        return None

    @property
    def joins_others(self) -> bool:
        return True

    def try_become_writer(self) -> None:
        return None

    def why_unavailable(self) -> str:
        return f"nobody answered at {self.database}"

    def sync_channel(self) -> SyncChannel:
        """A line for one thread."""
        raise NotImplementedError

    def async_channel(self, loop: asyncio.AbstractEventLoop) -> AsyncChannel:
        """A pipelined line for one event loop."""
        raise NotImplementedError

    async def aclose_channel(self, channel: AsyncChannel) -> None:
        """Release what ``channel`` holds that only a coroutine can close."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rows.close()


def open_remote_core(url: str, config: Config, ops: Ops) -> RemoteCore:
    if url.startswith("tcp://"):
        from ..writer.endpoints.tcp import TcpCore

        return TcpCore(url, config, ops)
    from .transports.redis import RedisCore

    return RedisCore(url, config, ops)


class _RemoteFace:
    """What both remote faces share: the core that reaches another host."""

    _database: str
    config: Config
    _ops: Ops

    def _open_core(self) -> RemoteCore:
        return open_remote_core(self._database, self.config, self._ops)

    @property
    def path(self) -> str:
        """The writer's address."""
        return self._database

    @property
    def is_writer(self) -> bool:
        return False


class RemoteDatabase(_RemoteFace, Database):
    """A :class:`Database` whose writer runs on another host (``tcp://`` or ``redis://``).

    Writes, and reads too, go to the writer's host; reads run there on its reader pool.
    """

    def _live_core(self) -> RemoteCore:
        core = super()._live_core()
        assert isinstance(core, RemoteCore)
        return core

    def _new_channel(self, core: Core) -> SyncChannel:
        assert isinstance(core, RemoteCore)
        return core.sync_channel()

    def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run a read on the writer's host (its reader pool); rows have columns by name."""
        result = self._channel().call(read_fields(sql, params, timeout), write=False)
        return self._live_core().rows.build(result)


class AsyncRemoteDatabase(_RemoteFace, AsyncDatabase):
    """The asyncio twin of :class:`RemoteDatabase`: many requests in flight at once."""

    def _live_core(self) -> RemoteCore:
        core = super()._live_core()
        assert isinstance(core, RemoteCore)
        return core

    def _new_channel(self, core: Core, loop: asyncio.AbstractEventLoop) -> AsyncChannel:
        assert isinstance(core, RemoteCore)
        return core.async_channel(loop)

    async def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run a read on the writer's host (its reader pool)."""
        result = await self._channel().call(read_fields(sql, params, timeout), write=False)
        return self._live_core().rows.build(result)

    async def close(self) -> None:
        """Close the lines (and their Redis clients) and forget the writer. Idempotent."""
        mine = not self._closed and self._core.pid == os.getpid()
        channel = self._channels.get(asyncio.get_running_loop()) if mine else None
        await super().close()
        core = self._core
        if channel is not None and isinstance(core, RemoteCore):
            await core.aclose_channel(channel)


def _remote_config(config: Config | None, overrides: dict[str, Any]) -> Config:
    """``queue=`` is the short name of ``redis_queue`` on ``connect("redis://...")``."""
    if "queue" in overrides:
        overrides["redis_queue"] = overrides.pop("queue")
    return make_config(config, overrides)


def connect_remote(
    url: str, *, ops: Ops | None = None, config: Config | None = None, **overrides: Any
) -> Database:
    """``connect()`` for ``tcp://`` and ``redis://`` addresses."""
    db = RemoteDatabase(url, ops, _remote_config(config, overrides))
    try:
        return db.start()
    except BaseException:
        db.close()
        raise


def connect_remote_async(
    url: str, *, ops: Ops | None = None, config: Config | None = None, **overrides: Any
) -> AsyncDatabase:
    """``connect_async()`` for ``tcp://`` and ``redis://`` addresses."""
    return AsyncRemoteDatabase(url, ops, _remote_config(config, overrides))
