"""A lean Redis connection for a producer's hot path: its pushes and its reply reads.

redis-py's asyncio client costs about 200 us of CPU per command on a small machine (a
pool, a retry wrapper and response callbacks around each one); a producer sends one
command per flush and one per read of its replies, so that cost was most of a Redis
write's. This speaks RESP itself on an asyncio protocol, with hiredis (part of the
``redis`` extra) to parse replies, and costs about a quarter of that. It knows only what
a producer needs: connect (TCP or TLS), AUTH, SELECT, then commands answered in order.
Errors are redis-py's (``redis.ConnectionError``, ``redis.TimeoutError``,
``redis.ResponseError``), so callers handle both clients alike. It never re-sends a
command, as the other clients here (``wire/redis.py``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any

from ..extras import missing_extra

try:
    import hiredis
    import redis
    from redis.connection import parse_url
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None

from .redis import CONNECT_TIMEOUT, SOCKET_TIMEOUT

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def encode(args: tuple[Any, ...]) -> bytes:
    """One command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int | float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings a ``rediss://`` URL asks for (as redis-py reads them)."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    reqs = options.get("ssl_cert_reqs", "required")
    context.check_hostname = bool(options.get("ssl_check_hostname", reqs == "required"))
    context.verify_mode = _CERT_REQS.get(str(reqs).lower(), ssl.CERT_REQUIRED)
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


class _Connection(asyncio.Protocol):
    """One connection: commands are written at once and answered in order."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            future = self.waiting.popleft()
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(redis.ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(redis.ConnectionError("the Redis connection was lost"))

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(encode(args))
        return future

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class RespClient:
    """Commands to the Redis at ``url`` on one connection, made when first needed and
    again after it was lost (the command that found it lost fails, and is not re-sent)."""

    def __init__(self, url: str) -> None:
        self.options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Any, timeout: float = SOCKET_TIMEOUT) -> Any:
        """Send one command and return its reply; ``timeout`` counts from sending."""
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        future = connection.send(args)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            connection.close()  # a late reply would answer the next command
            raise redis.TimeoutError(f"Redis did not answer {args[0]} in {timeout:g} s") from None

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is not None and not self._connection.lost:
                return self._connection
            connection = await self._open()
            self._connection = connection
            return connection

    async def _open(self) -> _Connection:
        options = self.options
        host, port = options.get("host", "localhost"), options.get("port", 6379)
        tls = tls_context(options) if options.get("connection_class") is not None else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except (OSError, TimeoutError) as exc:
            what = f"could not connect to Redis at {host}:{port}: {exc}"
            raise redis.ConnectionError(what) from None
        try:
            password = options.get("password")
            if password is not None:
                user = options.get("username")
                credentials = (user, password) if user else (password,)
                await self._handshake(connection, "AUTH", *credentials)
            if options.get("db"):
                await self._handshake(connection, "SELECT", options["db"])
        except BaseException:
            connection.close()
            raise
        return connection

    async def _handshake(self, connection: _Connection, *args: Any) -> None:
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                await connection.send(args)
        except TimeoutError:
            raise redis.TimeoutError(f"Redis did not answer {args[0]}") from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
