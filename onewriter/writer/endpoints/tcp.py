"""The writer's TCP listener: the stream protocol behind a shared token, TLS optional.

A peer authenticates first (``wire.auth``); until then it may send only small frames and
has ``AUTH_TIMEOUT`` seconds. Then it is a stream peer like any other, with the TCP
origin's permissions (raw SQL only with ``allow_sql_remote``; reads and stats as
``Config.remote_reads`` says).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

from ...errors import QueueFull, Unauthorized
from ...wire import frames as proto
from ...wire.addresses import tcp_address, tcp_url
from ...wire.auth import (
    AUTH_TIMEOUT,
    CLIENT_LABEL,
    NONCE_BYTES,
    PRE_AUTH_MAX_FRAME,
    SERVER_LABEL,
    challenge,
    is_nonce,
    proof,
)
from ..intake import Origin
from .stream import StreamPeer

if TYPE_CHECKING:
    from ..service import WriterService

log = logging.getLogger("onewriter.tcp")


def server_ssl_context(cert: str, key: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class TcpPeer(StreamPeer):
    """One TCP client: authenticate first, then the stream protocol."""

    def __init__(self, listener: TcpListener) -> None:
        super().__init__(listener.service, listener.origin)
        self.listener = listener
        self.nonce = os.urandom(NONCE_BYTES)
        self.authenticated = False
        self.reader.max_frame = PRE_AUTH_MAX_FRAME
        self._auth_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        listener = self.listener
        listener.connections.add(self)
        limit = self.service.config.max_connections
        if len(listener.connections) > limit:
            listener.refused += 1
            self.refuse(QueueFull(f"the writer already has {limit} TCP connections open"))
            return
        listener.accepted += 1
        self._out.append(proto.pack(challenge(self.nonce)))
        self.flush()
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(AUTH_TIMEOUT, self._auth_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.listener.connections.discard(self)
        if self._auth_timer is not None:
            self._auth_timer.cancel()

    def _auth_expired(self) -> None:
        if not self.authenticated and not self.closed:
            self._refuse_auth(f"no authentication within {AUTH_TIMEOUT:.0f} s")

    def _refuse_auth(self, why: str) -> None:
        self.listener.auth_failures += 1
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.warning("refused TCP client %s: %s", peer, why)
        self.refuse(Unauthorized(why))

    def greet(self, message: Any) -> None:
        if self.authenticated:
            super().greet(message)
            return
        if not isinstance(message, dict):
            message = {}
        token = self.service.config.token
        assert token, "the listener starts only with a token"
        client_nonce = message.get("nonce")
        mac = message.get("mac")
        if message.get("t") != "auth" or not is_nonce(client_nonce):
            self._refuse_auth("the first message must answer the challenge")
            return
        expected = proof(token, CLIENT_LABEL, self.nonce, client_nonce)
        if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
            self._refuse_auth("wrong or missing token")
            return
        self.authenticated = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self.reader.max_frame = self.service.config.max_frame
        answer = proof(token, SERVER_LABEL, client_nonce, self.nonce)
        self._out.append(proto.pack({"t": "auth", "ok": True, "mac": answer}))


class TcpListener:
    """The writer's TCP server (on the writer's own loop)."""

    def __init__(self, service: WriterService, origin: Origin) -> None:
        config = service.config
        assert config.listen is not None
        if not config.token:
            raise ValueError("the TCP listener needs a token")
        self.service = service
        self.origin = origin
        self.host, self.port = tcp_address(config.listen)
        self.tls = config.tls_cert is not None
        self.url = tcp_url(self.host, self.port)
        self.connections: set[TcpPeer] = set()
        self.accepted = 0
        self.refused = 0
        self.auth_failures = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        config = self.service.config
        context = server_ssl_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpPeer(self),
            self.host,
            self.port,
            ssl=context,
            ssl_handshake_timeout=AUTH_TIMEOUT if context is not None else None,
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = tcp_url(self.host, port)
        log.info("writer %d listening on %s%s", self.service.pid, self.url, " (TLS)" * self.tls)

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tls": self.tls,
            "connections": len(self.connections),
            "accepted": self.accepted,
            "refused": self.refused,
            "auth_failures": self.auth_failures,
        }
