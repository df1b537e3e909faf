"""What the sync and asyncio faces share: paths, election, the local writer.

Finding the writer: connect to its socket; if nobody answers, try the lock; the winner
becomes the writer (migrating first), the others wait and connect again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .. import fork as _fork
from ..config import Config, resolve_paths
from ..errors import Unauthorized, WriterUnavailable, error_from_wire
from ..ops import Ops
from ..sqlite.readpool import ReadPool
from ..wire import frames as proto
from ..writer.direct import DirectWriter
from ..writer.election import ElectionLock, lock_is_held
from ..writer.service import WriterService
from .differences import warn_writer_differences

log = logging.getLogger("onewriter.client")

#: errno values meaning "no writer is listening at that path right now".
NO_LISTENER = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EAGAIN}
HELLO_TIMEOUT = 5.0
StreamProtocolT = TypeVar("StreamProtocolT", bound=asyncio.BaseProtocol)


class Core:
    """One database as seen by one process: its paths, reader pool, direct writes and
    writer role."""

    #: Whether sync / asyncio writes run directly here rather than through the writer.
    direct_sync = False
    direct_async = False
    direct: DirectWriter | None = None

    def __init__(self, database: str, config: Config, ops: Ops) -> None:
        self.database = database
        self.config = config
        self.ops = ops
        self.db_path, self.socket_path, self.lock_path = resolve_paths(database, config)
        self.pid = os.getpid()
        self.forks = _fork.generation()
        self.lock = ElectionLock(self.lock_path)
        self.local_writer: WriterService | None = None
        self.reads = ReadPool(self.db_path, config)
        self._elect_lock = threading.Lock()
        self.direct_sync, self.direct_async = write_routes(config)
        self.closed = False

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

    def running_local_writer(self) -> WriterService | None:
        writer = self.local_writer
        return writer if writer is not None and writer.running else None

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

    def unavailable(self, why: str) -> WriterUnavailable:
        return WriterUnavailable(
            f"no writer for {self.db_path} within {self.config.failover_timeout:.1f} s: {why}"
        )

    def why_unavailable(self) -> str:
        if self.joins_others and not lock_is_held(self.lock_path):
            return "no writer is running (nobody holds the writer lock)"
        if self.joins_others:
            return "nobody answered on the socket and the lock stayed taken"
        return f"role {self.config.role!r} needs the writer lock, and another process holds it"

    async def open_stream(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], StreamProtocolT]
    ) -> tuple[asyncio.BaseTransport, StreamProtocolT]:
        """Connect ``factory()`` to the writer, ready for hello (TCP overrides this)."""
        return await loop.create_unix_connection(factory, self.socket_path)

    def connect_socket(self, client: bytes) -> socket.socket | None:
        """Connect and say hello; ``None`` when no writer listens."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(HELLO_TIMEOUT)
            sock.connect(self.socket_path)
            sock.sendall(proto.frame(hello_message(client)))
            reply = read_one_message(sock, proto.FrameReader(self.config.max_frame))
        except OSError as exc:
            sock.close()
            if exc.errno in NO_LISTENER or isinstance(exc, ConnectionError | TimeoutError):
                return None
            raise
        except BaseException:
            sock.close()
            raise
        check_hello(reply)
        warn_writer_differences(reply, self.ops, len(self.config.migrations), self.database)
        sock.settimeout(None)
        return sock

    def find_writer(self, client: bytes) -> WriterService | socket.socket:
        """The local writer or a connected socket, electing if needed (blocking)."""
        deadline = time.monotonic() + self.config.failover_timeout
        delay = 0.002
        while True:
            writer = self.running_local_writer()
            if writer is not None:
                return writer
            if self.joins_others:
                sock = self.connect_socket(client)
                if sock is not None:
                    return sock
            writer = self.try_become_writer()
            if writer is not None:
                return writer
            if time.monotonic() > deadline:
                raise self.unavailable(self.why_unavailable())
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

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


def hello_message(client: bytes) -> dict[str, Any]:
    return {"t": "hello", "v": proto.PROTOCOL_VERSION, "client": client}


def check_hello(reply: Any) -> None:
    """Raise the writer's refusal, if its answer to hello was one."""
    if isinstance(reply, dict) and reply.get("t") == "hello":
        return
    if isinstance(reply, dict) and "error" in reply:
        raise error_from_wire(reply["error"])
    raise Unauthorized(f"unexpected answer to hello: {reply!r}")


def read_one_message(sock: socket.socket, reader: proto.FrameReader) -> Any:
    """Block until one whole message arrives on ``sock``."""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the writer closed the connection")
        for body in reader.feed(data):
            return proto.messages(proto.unpack(body))[0]


def reply_value(message: dict[str, Any]) -> Any:
    """The result of a reply, or its error raised."""
    error = message.get("error")
    if error is not None:
        raise error_from_wire(error)
    return message.get("result")
