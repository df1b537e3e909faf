"""The writer of a database file on this host: in this process, on its Unix socket, or,
when nobody holds the role, this process after winning the election."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from ...errors import WriterUnavailable
from .base import AsyncLink, Receiver, SyncLink
from .inprocess import InProcessAsyncLink, InProcessSyncLink
from .stream import HELLO_TIMEOUT, NO_LISTENER, Greeting, greet_socket, greet_stream

if TYPE_CHECKING:
    from ..core import Core


class UnixTransport:
    """Finds the writer for ``core``'s database, electing one when there is none."""

    stamps_client = False
    fire_and_forget = False

    def __init__(self, core: Core) -> None:
        self.core = core
        self.max_frame = core.config.max_frame
        self.greeting = Greeting(core.ops, len(core.config.migrations), core.database)

    def open_sync(self, client: bytes) -> SyncLink | None:
        core = self.core
        writer = core.running_local_writer()
        if writer is None and core.joins_others:
            link = self._connect(client)
            if link is not None:
                return link
        if writer is None:
            writer = core.try_become_writer()
        return InProcessSyncLink(writer, client) if writer is not None else None

    async def open_async(self, client: bytes, receiver: Receiver) -> AsyncLink | None:
        core = self.core
        loop = asyncio.get_running_loop()
        writer = core.running_local_writer()
        if writer is None and core.joins_others:
            path = core.socket_path
            link = await greet_stream(
                lambda factory: loop.create_unix_connection(factory, path),
                receiver,
                client,
                self.max_frame,
                self.greeting,
            )
            if link is not None:
                return link
        if writer is None:
            writer = await loop.run_in_executor(None, core.try_become_writer)
        return InProcessAsyncLink(writer, client, receiver, loop) if writer is not None else None

    def _connect(self, client: bytes) -> SyncLink | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(HELLO_TIMEOUT)
            sock.connect(self.core.socket_path)
            return greet_socket(sock, client, self.max_frame, self.greeting)
        except OSError as exc:
            sock.close()
            if exc.errno in NO_LISTENER or isinstance(exc, ConnectionError | TimeoutError):
                return None
            raise
        except BaseException:
            sock.close()
            raise

    def unavailable(self) -> WriterUnavailable:
        return self.core.unavailable()
