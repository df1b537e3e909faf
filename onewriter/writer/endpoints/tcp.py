"""The TCP transport: the writer's protocol over the network, behind a shared token.

The frames, pipelining and exactly-once ids are the Unix socket's (docs/protocol.md). A
challenge-response comes first, so that the token itself never crosses the wire::

    writer: {"t": "challenge", "v": 1, "nonce": <32 random bytes>}
    client: {"t": "auth", "nonce": <32 random bytes>,
             "mac": HMAC-SHA256(token, CLIENT_LABEL + writer nonce + client nonce)}
    writer: {"t": "auth", "ok": true,
             "mac": HMAC-SHA256(token, SERVER_LABEL + client nonce + writer nonce)}

and then the usual hello. A wrong or missing proof gets ``UNAUTHORIZED`` and a closed
connection; the client checks the writer's proof too, so that a host that does not know
the token cannot pose as the writer. Until it has authenticated, a peer may send only
small frames and has ``AUTH_TIMEOUT`` seconds. Raw SQL is refused (``SQL_NOT_ALLOWED``)
unless the writer allows it for remote clients. TLS is optional, around all of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeGuard

from ...client.channel import AsyncChannel, SyncChannel
from ...client.core import (
    HELLO_TIMEOUT,
    NO_LISTENER,
    StreamProtocolT,
    check_hello,
    hello_message,
    read_one_message,
)
from ...client.differences import warn_writer_differences
from ...client.remote import RemoteCore, tcp_address, tcp_url
from ...config import Config
from ...errors import BadRequest, OneWriterError, QueueFull, Unauthorized, error_from_wire
from ...ops import Ops
from ...wire import frames as proto
from .reads import RemoteReads, reads_allowed, reads_disabled
from .stream import ClientConnection

if TYPE_CHECKING:
    from ..service import WriterService

log = logging.getLogger("onewriter.tcp")

AUTH_VERSION = 1
NONCE_BYTES = 32
#: Seconds a new connection has to authenticate.
AUTH_TIMEOUT = 10.0
#: Largest frame accepted before authentication (a challenge answer is ~100 bytes).
PRE_AUTH_MAX_FRAME = 4096
CLIENT_LABEL = b"onewriter-tcp-v1 client proof"
SERVER_LABEL = b"onewriter-tcp-v1 server proof"


def proof(token: str, label: bytes, first: bytes, second: bytes) -> bytes:
    """HMAC-SHA256 over a label and two fixed-size nonces. Whitespace around the token
    is not part of it, on either side: a token read from a file keeps its newline."""
    return hmac.new(token.strip().encode(), label + first + second, hashlib.sha256).digest()


def _is_nonce(value: Any) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == NONCE_BYTES


def answer_challenge(challenge: Any, token: str | None, nonce: bytes) -> tuple[Any, bytes]:
    """The client's auth message for the writer's challenge, and the writer's nonce.

    Raises the writer's refusal when it sent one instead (too many connections)."""
    if isinstance(challenge, dict) and "error" in challenge:
        raise error_from_wire(challenge["error"])
    if not (
        isinstance(challenge, dict)
        and challenge.get("t") == "challenge"
        and challenge.get("v") == AUTH_VERSION
        and _is_nonce(challenge.get("nonce"))
    ):
        raise Unauthorized(f"the peer did not send an onewriter challenge: {challenge!r:.200}")
    server_nonce: bytes = challenge["nonce"]
    message: dict[str, Any] = {"t": "auth", "nonce": nonce}
    if token:
        message["mac"] = proof(token, CLIENT_LABEL, server_nonce, nonce)
    return message, server_nonce


def check_auth_reply(reply: Any, token: str | None, nonce: bytes, server_nonce: bytes) -> None:
    """Raise unless the writer accepted us and proved that it knows the token too."""
    if isinstance(reply, dict) and "error" in reply:
        raise error_from_wire(reply["error"])
    mac = reply.get("mac") if isinstance(reply, dict) else None
    if not (
        token
        and isinstance(reply, dict)
        and reply.get("t") == "auth"
        and reply.get("ok") is True
        and isinstance(mac, bytes)
        and hmac.compare_digest(mac, proof(token, SERVER_LABEL, nonce, server_nonce))
    ):
        raise Unauthorized("the writer did not prove that it knows the token")


# -- the writer's side ------------------------------------------------------------------------


def server_ssl_context(cert: str, key: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class TcpConnection(ClientConnection):
    """One TCP client: authenticate first, then the Unix socket's protocol plus ``read``."""

    def __init__(self, listener: TcpListener) -> None:
        service = listener.service
        super().__init__(
            service,
            allow_sql=service.config.allow_sql_remote,
            serves_reads=reads_allowed(service.config, "tcp"),
        )
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
        challenge = {"t": "challenge", "v": AUTH_VERSION, "nonce": self.nonce}
        self._out.append(proto.pack(challenge))
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

    def _hello(self, message: dict[str, Any]) -> None:
        if self.authenticated:
            super()._hello(message)
            return
        token = self.service.config.token
        assert token, "the listener starts only with a token"
        client_nonce = message.get("nonce")
        mac = message.get("mac")
        if message.get("t") != "auth" or not _is_nonce(client_nonce):
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

    def _request(self, m: dict[str, Any]) -> None:
        if m.get("t") != "read":
            super()._request(m)
            return
        rid = m.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            self._reply_error(None, BadRequest("every request needs an integer id"))
        elif not self.serves_reads:
            self._reply_error(rid, reads_disabled("tcp"))
        else:
            self.listener.reads.start(rid, m, self._answer)

    def _answer(self, body: bytes) -> None:
        if not self.closed:
            self._out.append(body)
            self.flush()


class TcpListener:
    """The writer's TCP server (on the writer's own loop)."""

    def __init__(self, service: WriterService, reads: RemoteReads) -> None:
        config = service.config
        assert config.listen is not None
        if not config.token:
            raise ValueError("the TCP listener needs a token")
        self.service = service
        self.reads = reads
        self.host, self.port = tcp_address(config.listen)
        self.tls = config.tls_cert is not None
        self.url = tcp_url(self.host, self.port)
        self.connections: set[TcpConnection] = set()
        self.accepted = 0
        self.refused = 0
        self.auth_failures = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        config = self.service.config
        context = server_ssl_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self),
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


# -- the client's side ------------------------------------------------------------------------


def _tls_refused(url: str, exc: ssl.SSLError) -> Unauthorized:
    return Unauthorized(f"TLS with {url} failed: {exc}")


def connect_tcp(
    host: str, port: int, config: Config, client: bytes, url: str, ops: Ops | None = None
) -> socket.socket | None:
    """Connect, authenticate and say hello; ``None`` when nobody answers (yet)."""
    timeout = min(HELLO_TIMEOUT, max(0.1, config.failover_timeout))
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        if isinstance(exc, ConnectionError | TimeoutError) or exc.errno in NO_LISTENER:
            return None
        raise
    sock: socket.socket = raw
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if config.ssl is not None:
            sock = config.ssl.wrap_socket(raw, server_hostname=host)
        reader = proto.FrameReader(config.max_frame)
        nonce = os.urandom(NONCE_BYTES)
        auth, server_nonce = answer_challenge(read_one_message(sock, reader), config.token, nonce)
        sock.sendall(proto.frame(auth))
        check_auth_reply(read_one_message(sock, reader), config.token, nonce, server_nonce)
        sock.sendall(proto.frame(hello_message(client)))
        hello = read_one_message(sock, reader)
        check_hello(hello)
        if ops is not None:
            warn_writer_differences(hello, ops, len(config.migrations), url)
    except ssl.SSLError as exc:
        sock.close()
        raise _tls_refused(url, exc) from None
    except (ConnectionError, TimeoutError, EOFError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


class _Handshake(asyncio.Protocol):
    """Runs the challenge-response on a new connection, before the channel's protocol
    takes the connection over."""

    def __init__(self, token: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.token = token
        self.nonce = os.urandom(NONCE_BYTES)
        self.server_nonce: bytes | None = None
        self.reader = proto.FrameReader(PRE_AUTH_MAX_FRAME)
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

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


class TcpCore(RemoteCore):
    """A writer reached at ``tcp://HOST:PORT``: the Unix socket's channels over TCP."""

    def __init__(self, url: str, config: Config, ops: Ops) -> None:
        super().__init__(url, config, ops)
        self.host, self.port = tcp_address(url)

    def why_unavailable(self) -> str:
        hint = "" if self.config.ssl is not None else " (if it speaks TLS, pass ssl=)"
        return f"nobody answered at {self.database}{hint}"

    def sync_channel(self) -> SyncChannel:
        return SyncChannel(self)

    def async_channel(self, loop: asyncio.AbstractEventLoop) -> AsyncChannel:
        return AsyncChannel(self, loop)

    def connect_socket(self, client: bytes) -> socket.socket | None:
        return connect_tcp(self.host, self.port, self.config, client, self.database, self.ops)

    async def open_stream(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], StreamProtocolT]
    ) -> tuple[asyncio.BaseTransport, StreamProtocolT]:
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
            raise _tls_refused(self.database, exc) from None
        try:
            await asyncio.wait_for(handshake.done, HELLO_TIMEOUT)
        except TimeoutError:
            transport.close()
            raise ConnectionResetError("no answer to authentication in time") from None
        except BaseException:
            transport.close()
            raise
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        return transport, protocol
