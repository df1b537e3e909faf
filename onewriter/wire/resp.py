"""Lean Redis connections for the hot paths: a producer's pushes and reply reads and
the writer's consumer (asyncio), and a sync producer's (blocking).

redis-py's asyncio client costs about 200 us of CPU per command on a small machine (a
pool, a retry wrapper and response callbacks around each one); a producer sends one
command per flush and one per read of its replies, so that cost was most of a Redis
write's. This speaks RESP itself, with hiredis (part of the ``redis`` extra) to parse
replies, and costs well under half of that (docs/design.md has the figures). It knows
only what both sides need: connect (TCP or TLS), AUTH, SELECT, then commands answered in
order (the consumer's in MULTI).
Errors are redis-py's (``redis.ConnectionError``, ``redis.TimeoutError``,
``redis.ResponseError``). It never re-sends a command by itself: a re-sent RPUSH could
queue a request twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Coroutine
from typing import Any

from ..extras import missing_extra

try:
    import hiredis
    import redis
    from redis.connection import parse_url
except ImportError as exc:
    raise missing_extra("redis", "the Redis transport", exc) from None

#: Seconds a command's reply may take (a blocking read adds its own block time).
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
#: How often an asyncio connection looks for commands past their deadline.
_SWEEP_INTERVAL = 0.1
#: Seconds an asyncio connection may take to close.
_GOODBYE = 1.0

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


def _raise_errors(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error reply: the first is raised."""
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
    return replies


async def _replies(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """A transaction's replies from the futures of MULTI, its commands and EXEC; the
    first error among them raised."""
    with contextlib.suppress(Exception):
        await futures[-1]  # answered last: every other one is settled by then
    errors = [future.exception() for future in futures]
    first = next((error for error in errors if error is not None), None)
    if first is not None:  # as a pipeline's: the first error in order
        raise first
    done = futures[-1].result()
    if not isinstance(done, list):
        raise redis.ResponseError(f"the transaction was not run: {done!r}")
    return _raise_errors(done)


class _Options:
    """Where a Redis URL points, and what to say first."""

    def __init__(self, url: str) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.host: str = options.get("host", "localhost")
        self.port: int = options.get("port", 6379)
        tls = options.get("connection_class") is not None  # rediss://
        self.tls = tls_context(options) if tls else None
        self.handshake: list[tuple[Any, ...]] = []
        password = options.get("password")
        if password is not None:
            user = options.get("username")
            self.handshake.append(("AUTH", user, password) if user else ("AUTH", password))
        if options.get("db"):
            self.handshake.append(("SELECT", options["db"]))

    def refused(self, exc: BaseException) -> redis.ConnectionError:
        return redis.ConnectionError(
            f"could not connect to Redis at {self.host}:{self.port}: {exc}"
        )


class _Connection(asyncio.Protocol):
    """One connection: commands are written at once and answered in order. One timer
    per connection, not one per command, fails what waits past its deadline."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        #: per command sent and not answered: its future, deadline and name
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float, str]] = (
            collections.deque()
        )
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.sweeper: asyncio.TimerHandle | None = None
        self.lost = False
        self.gone: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            future = self.waiting.popleft()[0]
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(redis.ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(redis.ConnectionError("the Redis connection was lost"))
        if not self.gone.done():
            self.gone.set_result(None)

    def send(self, args: tuple[Any, ...], timeout: float) -> asyncio.Future[Any]:
        return self.send_all([args], timeout)[0]

    def send_all(
        self, commands: list[tuple[Any, ...]], timeout: float
    ) -> list[asyncio.Future[Any]]:
        """Write ``commands`` at once; a future for each reply."""
        assert self.transport is not None
        loop = self.loop
        deadline = loop.time() + timeout
        futures = []
        for args in commands:
            future = loop.create_future()
            self.waiting.append((future, deadline, str(args[0])))
            futures.append(future)
        self.transport.write(b"".join(map(encode, commands)))
        if self.sweeper is None:
            self.sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        return futures

    def _sweep(self) -> None:
        self.sweeper = None
        if not self.waiting or self.lost:
            return
        now = self.loop.time()
        late = next((name for _, deadline, name in self.waiting if deadline <= now), None)
        if late is not None:  # a late reply would answer the next command: close
            self._fail_all(redis.TimeoutError(f"Redis did not answer {late} in time"))
            return
        self.sweeper = self.loop.call_later(_SWEEP_INTERVAL, self._sweep)

    def _fail_all(self, error: Exception) -> None:
        self.close()
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.lost = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        if self.transport is not None:
            self.transport.close()


class RespClient:
    """Commands to the Redis at ``url`` on one connection, made when first needed and
    again after it was lost (the command that found it lost fails, and is not re-sent)."""

    def __init__(self, url: str) -> None:
        self.options = _Options(url)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Any, timeout: float = SOCKET_TIMEOUT) -> Any:
        """Send one command and return its reply; ``timeout`` counts from sending."""
        connection = self._open_one() or await self._connect()
        return await connection.send(args, timeout)

    async def send(
        self, commands: list[tuple[Any, ...]], timeout: float = SOCKET_TIMEOUT
    ) -> list[asyncio.Future[Any]]:
        """Write ``commands`` at once (connecting first if need be); the future of each
        one's reply, in order."""
        connection = self._open_one() or await self._connect()
        return connection.send_all(commands, timeout)

    def send_transaction(
        self, commands: list[tuple[Any, ...]], timeout: float = SOCKET_TIMEOUT
    ) -> Coroutine[Any, Any, list[Any]]:
        """Write ``commands`` in one MULTI .. EXEC now, on the open connection (a
        ``redis.ConnectionError`` if there is none); await the result for the replies.
        Lets a caller do other work between the writing and the answer."""
        connection = self._open_one()
        if connection is None:
            raise redis.ConnectionError("the Redis connection was lost")
        return _replies(connection.send_all([("MULTI",), *commands, ("EXEC",)], timeout))

    def _open_one(self) -> _Connection | None:
        """The connection, unless there is none yet or it was lost."""
        connection = self._connection
        return connection if connection is not None and not connection.lost else None

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            connection = self._open_one()
            if connection is not None:
                return connection
            connection = await self._open()
            self._connection = connection
            return connection

    async def _open(self) -> _Connection:
        options = self.options
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, connection = await loop.create_connection(
                    _Connection,
                    options.host,
                    options.port,
                    ssl=options.tls,
                    server_hostname=options.host if options.tls else None,
                )
        except (OSError, TimeoutError) as exc:
            raise options.refused(exc) from None
        try:
            for command in options.handshake:
                await connection.send(command, SOCKET_TIMEOUT)
        except BaseException:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        """Close, and wait a moment for the connection to be gone (TLS says goodbye
        first: a loop that ended before would leave its socket open)."""
        connection = self._connection
        self.close()
        if connection is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_GOODBYE):
                    await asyncio.shield(connection.gone)


class RespSocket:
    """A blocking connection, for sync producers.
    Every call sends its commands at once and reads all their replies. A connection
    that failed is closed, and the next call opens a new one (nothing is re-sent)."""

    def __init__(self, url: str) -> None:
        self.options = _Options(url)
        self.parser = hiredis.Reader()
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        options = self.options
        try:
            sock = socket.create_connection((options.host, options.port), CONNECT_TIMEOUT)
        except OSError as exc:
            raise options.refused(exc) from None
        if options.tls is not None:
            try:
                sock = options.tls.wrap_socket(sock, server_hostname=options.host)
            except OSError as exc:  # ssl.SSLError too: a certificate refused
                sock.close()
                raise options.refused(exc) from None
        sock.settimeout(SOCKET_TIMEOUT)
        self.sock = sock
        if options.handshake:
            try:
                self.pipeline(options.handshake)
            except redis.ResponseError:
                self.close()  # refused (a wrong password): never used unauthenticated
                raise

    def call(self, *args: Any) -> Any:
        return self.pipeline([args])[0]

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once, read every reply; the first error reply raised."""
        if self.sock is None:
            self.connect()
        sock = self.sock
        assert sock is not None
        try:
            sock.sendall(b"".join(encode(command) for command in commands))
            replies = [self._reply(sock) for _ in commands]
        except TimeoutError:
            self.close()
            raise redis.TimeoutError(f"Redis did not answer in {SOCKET_TIMEOUT:g} s") from None
        except OSError as exc:
            self.close()
            raise redis.ConnectionError(f"the Redis connection failed: {exc}") from None
        return _raise_errors(replies)

    def _reply(self, sock: socket.socket) -> Any:
        parser = self.parser
        while (reply := parser.gets()) is False:
            data = sock.recv(262144)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            parser.feed(data)
        return reply

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self.parser = hiredis.Reader()
        if sock is not None:
            sock.close()
