"""A writer reached at ``tcp://HOST:PORT``: authenticate (``wire.auth``), then the
stream links of the Unix socket. TLS around all of it when ``Config.ssl`` is set."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from ...config import Config
from ...errors import BadRequest, OneWriterError, Unauthorized, WriterUnavailable
from ...ops import Ops
from ...wire import frames as proto
from ...wire.addresses import tcp_address
from ...wire.auth import NONCE_BYTES, PRE_AUTH_MAX_FRAME, answer_challenge, check_auth_reply
from .base import AsyncLink, Receiver, SyncLink
from .stream import (
    HELLO_TIMEOUT,
    NO_LISTENER,
    Greeting,
    StreamLink,
    greet_socket,
    greet_stream,
    read_one_message,
)


def _tls_refused(url: str, exc: ssl.SSLError) -> Unauthorized:
    return Unauthorized(f"TLS with {url} failed: {exc}")


class TcpTransport:
    """Links to the writer listening at ``url``."""

    stamps_client = False
    fire_and_forget = False

    def __init__(self, url: str, config: Config, ops: Ops) -> None:
        self.url = url
        self.config = config
        self.host, self.port = tcp_address(url)
        self.greeting = Greeting(ops, len(config.migrations), url)

    def open_sync(self, client: bytes) -> SyncLink | None:
        """Connect, authenticate and say hello; ``None`` when nobody answers (yet)."""
        config = self.config
        timeout = min(HELLO_TIMEOUT, max(0.1, config.failover_timeout))
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            if isinstance(exc, ConnectionError | TimeoutError) or exc.errno in NO_LISTENER:
                return None
            raise
        sock: socket.socket = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if config.ssl is not None:
                sock = config.ssl.wrap_socket(raw, server_hostname=self.host)
            reader = proto.FrameReader(config.max_frame)
            nonce = os.urandom(NONCE_BYTES)
            auth, server_nonce = answer_challenge(
                read_one_message(sock, reader), config.token, nonce
            )
            sock.sendall(proto.frame(auth))
            check_auth_reply(read_one_message(sock, reader), config.token, nonce, server_nonce)
            return greet_socket(sock, client, config.max_frame, self.greeting)
        except ssl.SSLError as exc:
            sock.close()
            raise _tls_refused(self.url, exc) from None
        except (ConnectionError, TimeoutError, EOFError):
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise

    async def open_async(self, client: bytes, receiver: Receiver) -> AsyncLink | None:
        return await greet_stream(
            self._authenticated, receiver, client, self.config.max_frame, self.greeting
        )

    async def _authenticated(
        self, factory: Callable[[], StreamLink]
    ) -> tuple[asyncio.BaseTransport, StreamLink]:
        loop = asyncio.get_running_loop()
        context = self.config.ssl
        try:
            transport, handshake = await loop.create_connection(
                lambda: _Handshake(self.config.token, loop),
                self.host,
                self.port,
                ssl=context,
                server_hostname=self.host if context is not None else None,
                ssl_handshake_timeout=HELLO_TIMEOUT if context is not None else None,
            )
        except ssl.SSLError as exc:
            raise _tls_refused(self.url, exc) from None
        try:
            await asyncio.wait_for(handshake.done, HELLO_TIMEOUT)
        except TimeoutError:
            transport.close()
            raise ConnectionResetError("no answer to authentication in time") from None
        except BaseException:
            transport.close()
            raise
        link = factory()
        transport.set_protocol(link)
        link.connection_made(transport)
        return transport, link

    def unavailable(self) -> WriterUnavailable:
        hint = "" if self.config.ssl is not None else " (if it speaks TLS, pass ssl=)"
        return WriterUnavailable(
            f"no writer for {self.url} within {self.config.failover_timeout:.1f} s: "
            f"nobody answered at {self.url}{hint}"
        )


class _Handshake(asyncio.Protocol):
    """Runs the challenge-response on a new connection, before the link takes the
    connection over."""

    def __init__(self, token: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.token = token
        self.nonce = os.urandom(NONCE_BYTES)
        self.server_nonce: bytes | None = None
        self.reader = proto.FrameReader(PRE_AUTH_MAX_FRAME)
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.reader.feed(data):
                for message in proto.messages(proto.unpack(body)):
                    self._step(message)
        except OneWriterError as exc:
            if not self.done.done():
                self.done.set_exception(exc)

    def _step(self, message: Any) -> None:
        if self.done.done():
            raise BadRequest("the writer spoke out of turn during authentication")
        if self.server_nonce is None:
            auth, self.server_nonce = answer_challenge(message, self.token, self.nonce)
            assert self.transport is not None
            self.transport.write(proto.frame(auth))
            return
        check_auth_reply(message, self.token, self.nonce, self.server_nonce)
        self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("closed during authentication"))
