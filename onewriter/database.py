"""The public faces: :class:`Database` (sync) and :class:`AsyncDatabase` (asyncio).

Both are thin twins over a core (``client/core.py``): reads go to this process's reader
pool, writes run here under the write turn or go to the one writer over a channel. The
remote faces at the end reach a writer on another host.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import sqlite3
import threading
import warnings
import weakref
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from . import fork as _fork
from .client.channel import AsyncChannel, SyncChannel
from .client.core import Core, CoreBase
from .client.remote import REMOTE_SCHEMES, RemoteCore, read_fields
from .config import Config
from .errors import Closed
from .ops import Op, Ops, op_name
from .sqlite.backup import BackupResult, backup_database
from .sqlite.readpool import Params
from .writer.direct import WriteResult as WriteResult
from .writer.direct import write_result

P = ParamSpec("P")
R = TypeVar("R")

_open: weakref.WeakSet[Database | AsyncDatabase] = weakref.WeakSet()
_abandoned: list[Any] = []


def _write_result(value: Any) -> WriteResult:
    return write_result(value.get("rowcount", -1), value.get("lastrowid"), value.get("rows") or [])


def _op_fields(
    op: Op[..., Any] | str, args: Sequence[Any], kwargs: dict[str, Any], config: Config
) -> dict[str, Any]:
    fields: dict[str, Any] = {"op": op_name(op), "deadline": config.request_timeout * 1000}
    if args:
        fields["args"] = list(args)
    if kwargs:
        fields["kwargs"] = kwargs
    return fields


def _sql_fields(sql: str, params: Any, many: bool, config: Config) -> dict[str, Any]:
    fields = {"sql": sql, "params": params, "deadline": config.request_timeout * 1000}
    if many:
        fields["many"] = True
        if type(params) is not list:
            fields["params"] = list(params)  # an iterator, say: the wire needs a list
    return fields


def _with_direct(stats: dict[str, Any], core: CoreBase) -> dict[str, Any]:
    direct = core.direct
    if direct is not None:
        stats = {**stats, "direct": direct.stats()}
    return stats


def _local(core: CoreBase) -> Core:
    """The core of a database file here (only those read locally or write directly)."""
    assert isinstance(core, Core)
    return core


def make_config(config: Config | None, overrides: dict[str, Any]) -> Config:
    base = config or Config()
    return base.replace(**overrides) if overrides else base


class _Face:
    """What both faces share: the core, fork detection and lifecycle."""

    def __init__(self, database: str, ops: Ops | None, config: Config) -> None:
        self._database = database
        self._ops = ops or Ops()
        self.config = config
        self._core = self._open_core()
        self._closed = False
        _open.add(self)  # type: ignore[arg-type]

    def _open_core(self) -> CoreBase:
        """This process's core (the remote faces open one that reaches another host)."""
        return Core(self._database, self.config, self._ops)

    @property
    def path(self) -> str:
        """The database file's absolute path."""
        return self._core.db_path

    @property
    def is_writer(self) -> bool:
        """Whether the writer currently runs in this process."""
        return self._core.running_local_writer() is not None

    def _live_core(self) -> CoreBase:
        if self._closed:
            raise Closed(f"the database {self._database!r} is closed")
        core = self._core
        if core.forks != _fork.generation():
            # Forked: never use (nor close) the parent's connections or sockets.
            _abandoned.append(core)
            if core.local_writer is not None:
                core.local_writer.abandon_after_fork()
            self._core = core = self._open_core()
            self._after_fork()
        return core

    def _after_fork(self) -> None:
        """Drop per-process channels (overridden)."""

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"onewriter database {getattr(self, '_database', '?')!r} was never closed",
                ResourceWarning,
                stacklevel=1,
            )


class Database(_Face):
    """A database shared by many processes, used from synchronous code.

    Thread-safe: each thread gets its own line to the writer.
    """

    def __init__(self, database: str, ops: Ops | None = None, config: Config | None = None) -> None:
        super().__init__(database, ops, config or Config())
        self._local = threading.local()
        self._channels: list[SyncChannel] = []
        self._channels_lock = threading.Lock()

    def _channel(self) -> SyncChannel:
        core = self._live_core()
        channel: SyncChannel | None = getattr(self._local, "channel", None)
        if channel is None or channel.transport is not core.transport:
            channel = core.sync_channel()
            self._local.channel = channel
            with self._channels_lock:
                self._channels.append(channel)
        return channel

    def _after_fork(self) -> None:
        _abandoned.append(self._channels)
        self._local = threading.local()
        self._channels = []
        self._channels_lock = threading.Lock()

    def start(self) -> Database:
        """Find the writer (or become it) now, rather than at the first write."""
        self._channel().connect()
        return self

    @overload
    def write(self, op: Op[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def write(self, op: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def write(self, op: Op[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a registered op in a transaction of its own, here under the write turn or
        on the writer (``Config.writes``); returns its result after COMMIT."""
        core = self._core
        direct = core.direct
        if direct is not None and core.forks == _fork.generation() and not self._closed:
            # The common case in one branch: direct writes already set up in this process.
            return direct.write(op.name if type(op) is Op else op_name(op), args, kwargs)
        core = self._live_core()
        if core.direct_sync:
            return _local(core).direct_writer().write(op_name(op), args, kwargs)
        channel = self._channel()
        return channel.call(_op_fields(op, args, kwargs, self.config))

    def execute_write(self, sql: str, params: Params = (), *, many: bool = False) -> WriteResult:
        """Run one raw SQL write statement (or ``executemany`` with many=True), here or
        on the writer, like :meth:`write`."""
        core = self._core
        direct = core.direct
        if direct is not None and core.forks == _fork.generation() and not self._closed:
            return direct.execute(sql, params, many)
        core = self._live_core()
        if core.direct_sync:
            return _local(core).direct_writer().execute(sql, params, many)
        channel = self._channel()
        return _write_result(channel.call(_sql_fields(sql, params, many, self.config)))

    def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run a read on this process's reader pool; rows have columns by name."""
        return _local(self._live_core()).reads.read(sql, params, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        """The writer's figures (queue, batches, commit latency, errors, WAL size), and
        under ``direct`` this process's direct writes (commits, errors, turn waits)."""
        result: dict[str, Any] = self._channel().call({"t": "stats"}, write=False)
        return _with_direct(result, self._live_core())

    def backup(self, dest: str) -> BackupResult:
        """Copy the database to ``dest`` from one read snapshot; writes go on meanwhile
        (docs/backup.md)."""
        return backup_database(self._live_core().db_path, dest, self.config)

    def close(self) -> None:
        """Close this process's lines and readers; if this process is the writer, drain
        its queue and hand the role on. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _open.discard(self)
        if self._core.pid != os.getpid():
            return
        with self._channels_lock:
            channels, self._channels = self._channels, []
        for channel in channels:
            channel.close()
        self._core.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncDatabase(_Face):
    """A database shared by many processes, used from asyncio code.

    SQLite work never runs on the event loop: reads go to reader threads, writes to
    the writer (its own thread when it lives in this process).
    """

    def __init__(self, database: str, ops: Ops | None = None, config: Config | None = None) -> None:
        super().__init__(database, ops, config or Config())
        self._channels: dict[asyncio.AbstractEventLoop, AsyncChannel] = {}

    def _channel(self, core: CoreBase | None = None) -> AsyncChannel:
        if core is None:
            core = self._live_core()
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None or channel.transport is not core.transport:
            channel = core.async_channel(loop)
            self._channels[loop] = channel
        return channel

    def _after_fork(self) -> None:
        _abandoned.append(self._channels)
        self._channels = {}

    async def start(self) -> AsyncDatabase:
        """Find the writer (or become it) now, rather than at the first write."""
        await self._channel().connect()
        return self

    def __await__(self) -> Generator[Any, None, AsyncDatabase]:
        return self._start_or_close().__await__()

    async def _start_or_close(self) -> AsyncDatabase:
        """Start; on failure close, as nobody else holds this object to close it."""
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    @overload
    async def write(self, op: Op[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def write(self, op: str, /, *args: Any, **kwargs: Any) -> Any: ...

    async def write(self, op: Op[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a registered op on the writer (or, with ``writes="direct"``, here on a
        thread under the write turn); returns its result after COMMIT."""
        core = self._live_core()
        if core.direct_async:
            direct = _local(core).direct_writer()
            call = functools.partial(direct.write, op_name(op), args, kwargs)
            return await asyncio.get_running_loop().run_in_executor(direct.executor(), call)
        return await self._channel(core).call(_op_fields(op, args, kwargs, self.config))

    async def execute_write(
        self, sql: str, params: Params = (), *, many: bool = False
    ) -> WriteResult:
        """Run one raw SQL write statement, routed like :meth:`write`."""
        core = self._live_core()
        if core.direct_async:
            direct = _local(core).direct_writer()
            call = functools.partial(direct.execute, sql, params, many)
            return await asyncio.get_running_loop().run_in_executor(direct.executor(), call)
        value = await self._channel(core).call(_sql_fields(sql, params, many, self.config))
        return _write_result(value)

    async def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run a read on a reader thread; the event loop keeps running meanwhile."""
        return await _local(self._live_core()).reads.read_async(sql, params, timeout=timeout)

    async def stats(self) -> dict[str, Any]:
        """The writer's figures, and this process's direct writes (as the sync face)."""
        result: dict[str, Any] = await self._channel().call({"t": "stats"}, write=False)
        return _with_direct(result, self._live_core())

    async def backup(self, dest: str) -> BackupResult:
        """Copy the database to ``dest`` from one read snapshot, on a thread."""
        path = self._live_core().db_path
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, backup_database, path, dest, self.config)

    async def close(self) -> None:
        """Close lines and readers; drain and hand on the writer role if held. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _open.discard(self)
        if self._core.pid != os.getpid():
            return
        channels, self._channels = self._channels, {}
        loop = asyncio.get_running_loop()
        for channel_loop, channel in channels.items():
            if channel_loop is loop:
                await channel.aclose()
            else:
                channel.close()
        await loop.run_in_executor(None, self._core.close)

    async def __aenter__(self) -> AsyncDatabase:
        return await self._start_or_close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _RemoteFace:
    """What both remote faces share: the core that reaches another host."""

    _database: str
    config: Config
    _ops: Ops
    _core: CoreBase

    def _open_core(self) -> CoreBase:
        return RemoteCore(self._database, self.config, self._ops)

    def _rows(self, result: Any) -> list[sqlite3.Row]:
        core = self._core
        assert isinstance(core, RemoteCore)
        return core.rows.build(result)

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

    def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run a read on the writer's host (its reader pool); rows have columns by name."""
        return self._rows(self._channel().call(read_fields(sql, params, timeout), write=False))


class AsyncRemoteDatabase(_RemoteFace, AsyncDatabase):
    """The asyncio twin of :class:`RemoteDatabase`: many requests in flight at once."""

    async def read(
        self, sql: str, params: Params = (), *, timeout: float | None = None
    ) -> list[sqlite3.Row]:
        """Run a read on the writer's host (its reader pool)."""
        result = await self._channel().call(read_fields(sql, params, timeout), write=False)
        return self._rows(result)


def _remote_config(config: Config | None, overrides: dict[str, Any]) -> Config:
    """``queue=`` is the short name of ``redis_queue`` on ``connect("redis://...")``."""
    if "queue" in overrides:
        overrides["redis_queue"] = overrides.pop("queue")
    return make_config(config, overrides)


def connect(
    database: str,
    *,
    ops: Ops | None = None,
    config: Config | None = None,
    **overrides: Any,
) -> Database:
    """Open ``database`` for this process: reads here, writes through the one writer.

    Keyword arguments override fields of ``config`` (for example ``role="standalone"``).
    Returns once a writer is reached or this process has become it. ``tcp://`` and
    ``redis://`` addresses reach a writer on another host (docs/remote.md).
    """
    if database.startswith(REMOTE_SCHEMES):
        db: Database = RemoteDatabase(database, ops, _remote_config(config, overrides))
    else:
        db = Database(database, ops, make_config(config, overrides))
    try:
        return db.start()
    except BaseException:
        db.close()
        raise


def connect_async(
    database: str,
    *,
    ops: Ops | None = None,
    config: Config | None = None,
    **overrides: Any,
) -> AsyncDatabase:
    """The asyncio face: use as ``async with connect_async(...) as db`` or
    ``db = await connect_async(...)``."""
    if database.startswith(REMOTE_SCHEMES):
        return AsyncRemoteDatabase(database, ops, _remote_config(config, overrides))
    return AsyncDatabase(database, ops, make_config(config, overrides))


@atexit.register
def _close_at_exit() -> None:
    """Drain writers living in this process so that no queued write is dropped."""
    for face in list(_open):
        if isinstance(face, Database):
            face.close()
        elif face._core.pid == os.getpid():
            face._closed = True
            face._core.close()
