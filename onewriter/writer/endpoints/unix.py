"""The writer's Unix socket, for processes of this host.

Bound inside a fresh 0700 directory, set to 0600 and renamed into place (``election``);
every connection's peer uid is checked: only this user and ``Config.allowed_uids``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING

from ..election import bind_private_socket, peer_uid, remove_socket
from .stream import StreamPeer

if TYPE_CHECKING:
    from ..service import WriterService


class UnixListener:
    """Serves the socket at ``path`` on the writer's loop."""

    def __init__(self, service: WriterService, path: str) -> None:
        self.service = service
        self.path = path
        self._inode: int | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = bind_private_socket(self.path)
        self._inode = os.stat(self.path).st_ino
        service = self.service
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: StreamPeer(service, service.unix_origin, check_peer=self.authorize_peer),
            sock=sock,
        )

    def authorize_peer(self, sock: socket.socket) -> bool:
        """Only this user (and ``allowed_uids``) may use the Unix socket."""
        uid = peer_uid(sock)
        allowed = self.service.config.allowed_uids
        return uid is not None and (uid == os.getuid() or uid in allowed)

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def remove(self) -> None:
        """Remove the socket file, unless another writer's socket has replaced it."""
        if self._inode is not None:
            remove_socket(self.path, self._inode)
