"""A database as one process sees it: its paths, readers, direct writes, the writer role,
and the transport that reaches the writer.

Finding the writer: connect to its socket; if nobody answers, try the lock; the winner
becomes the writer (migrating first), the others wait and connect again
(``transports/unix.py``).
"""

from __future__ import annotations

import asyncio
import os
import threading

from .. import fork as _fork
from ..config import Config, resolve_paths
from ..errors import WriterUnavailable
from ..ops import Ops
from ..sqlite.readpool import ReadPool
from ..writer.direct import DirectWriter
from ..writer.election import ElectionLock, lock_is_held
from ..writer.service import WriterService
from .channel import AsyncChannel, SyncChannel
from .transports.base import Transport
from .transports.unix import UnixTransport


class CoreBase:
    """What every core has: the configuration, the process it belongs to, a transport."""

    #: Whether sync / asyncio writes run directly here rather than through the writer.
    direct_sync = False
    direct_async = False
    direct: DirectWriter | None = None
    local_writer: WriterService | None = None
    transport: Transport

    def __init__(self, database: str, config: Config, ops: Ops) -> None:
        self.database = database
        self.config = config
        self.ops = ops
        self.db_path = database
        self.pid = os.getpid()
        self.forks = _fork.generation()
        self.closed = False

    def running_local_writer(self) -> WriterService | None:
        writer = self.local_writer
        return writer if writer is not None and writer.running else None

    def sync_channel(self) -> SyncChannel:
        """A line to the writer for one thread."""
        return SyncChannel(self.transport, self.config)

    def async_channel(self, loop: asyncio.AbstractEventLoop) -> AsyncChannel:
        """A pipelined line to the writer for one event loop."""
        return AsyncChannel(self.transport, self.config, loop)

    def close(self) -> None:
        self.closed = True


class Core(CoreBase):
    """A database file on this host: its paths, reader pool, direct writes and the
    writer role."""

    def __init__(self, database: str, config: Config, ops: Ops) -> None:
        super().__init__(database, config, ops)
        self.db_path, self.socket_path, self.lock_path = resolve_paths(database, config)
        self.lock = ElectionLock(self.lock_path)
        self.reads = ReadPool(self.db_path, config)
        self._elect_lock = threading.Lock()
        self.direct_sync, self.direct_async = write_routes(config)
        self.transport = UnixTransport(self)

    # -- direct writes -------------------------------------------------------------------

    def direct_writer(self) -> DirectWriter:
        """This process's direct writes, set up at the first one."""
        direct = self.direct
        if direct is None:
            with self._elect_lock:
                direct = self.direct
                if direct is None:
                    direct = self.direct = DirectWriter(self.db_path, self.config, self.ops)
        return direct

    # -- the writer role ---------------------------------------------------------------

    @property
    def joins_others(self) -> bool:
        """Whether this role may send its writes to a writer in another process
        (``writer`` and ``standalone`` must hold the role themselves, or fail)."""
        return self.config.role in ("auto", "client")

    def try_become_writer(self) -> WriterService | None:
        """Take the lock and start serving, if nobody holds it (never blocks on others)."""
        if self.config.role == "client":
            return None
        with self._elect_lock:
            writer = self.running_local_writer()
            if writer is not None:
                return writer
            if not self.lock.try_acquire():
                return None
            socket_path = None if self.config.role == "standalone" else self.socket_path
            writer = WriterService(self.db_path, self.config, self.ops, self.lock, socket_path)
            try:
                writer.start()
            except BaseException:
                self.lock.release()
                raise
            self.local_writer = writer
            return writer

    def unavailable(self) -> WriterUnavailable:
        """Why no writer could be reached or become, for the caller."""
        if self.joins_others and not lock_is_held(self.lock_path):
            why = "no writer is running (nobody holds the writer lock)"
        elif self.joins_others:
            why = "nobody answered on the socket and the lock stayed taken"
        else:
            why = f"role {self.config.role!r} needs the writer lock, and another process holds it"
        return WriterUnavailable(
            f"no writer for {self.db_path} within {self.config.failover_timeout:.1f} s: {why}"
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        writer, self.local_writer = self.local_writer, None
        if writer is not None:
            writer.close()
        if self.direct is not None:
            self.direct.close()
        self.reads.close()


def write_routes(config: Config) -> tuple[bool, bool]:
    """Whether (sync, asyncio) writes run directly, by ``config.writes`` (the ``auto``
    column is the measured table in docs/design.md)."""
    if config.role == "client" or config.writes == "funnel":
        return False, False
    if config.writes == "direct":
        return True, True
    return config.durability == "normal", False
