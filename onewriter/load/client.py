"""A lean HTTP/1.1 keep-alive client on asyncio, so that the load client is not the bottleneck.

One request at a time per connection (no pipelining), bodies framed by Content-Length or
chunked encoding. A general client such as httpx spends several times more CPU per
request, and on a small machine the load client shares the cores with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the peer broke the protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Response:
    """Status, headers (lower-case names) and body of one response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Target:
    """Where the requests go, parsed once from a URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://host:port URL, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.encode("latin-1")


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.lost: HttpError | None = None
        self._head: tuple[int, dict[str, str], int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                response = self._parse()
            except HttpError as exc:
                self.waiter.set_exception(exc)
                return
            if response is not None:
                self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = HttpError("CONNECTION_LOST", f"the server closed the connection ({exc})")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def _parse(self) -> Response | None:
        buf = self.buffer
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                raise HttpError("BAD_RESPONSE", f"bad status line {lines[0]!r}") from None
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._head = (status, headers, end + 4)
        status, headers, start = self._head
        length = headers.get("content-length")
        if length is not None:
            stop = start + int(length)
            if len(buf) < stop:
                return None
            body = bytes(buf[start:stop])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(buf, start)
            if parsed is None:
                return None
            body, stop = parsed
        elif status in (204, 304) or 100 <= status < 200:
            body, stop = b"", start
        else:
            raise HttpError("BAD_RESPONSE", "a response without Content-Length or chunks")
        del buf[:stop]
        self._head = None
        return Response(status, headers, body)


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """The body of a whole chunked message from ``start``, and where it ends; None if
    more bytes are needed (trailers are not supported)."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        except ValueError:
            raise HttpError("BAD_RESPONSE", "bad chunk size") from None
        data_start = eol + 2
        if size == 0:
            if len(buf) < data_start + 2:
                return None
            return b"".join(parts), data_start + 2
        if len(buf) < data_start + size + 2:
            return None
        parts.append(bytes(buf[data_start : data_start + size]))
        pos = data_start + size + 2


class Connection:
    """One keep-alive connection; :meth:`request` reconnects when it was closed."""

    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout
        self._protocol: _Protocol | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(loop), self.target.host, self.target.port),
                self.timeout,
            )
        except TimeoutError:
            raise HttpError("CONNECT_TIMEOUT", "no connection in time") from None
        except OSError as exc:
            raise HttpError("CONNECT_FAILED", f"cannot connect: {exc}") from None
        return protocol

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        """Send one request and wait for its whole response."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or protocol.transport is None:
            protocol = self._protocol = await self._connect()
        target = self.target
        head = b"%s %s%s HTTP/1.1\r\nHost: %s\r\n" % (
            method.encode(),
            target.prefix.encode(),
            path.encode(),
            target.host_header,
        )
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        loop = protocol.loop
        waiter: asyncio.Future[Response] = loop.create_future()
        protocol.waiter = waiter
        assert protocol.transport is not None
        protocol.transport.write(head + b"\r\n" + body if body is not None else head + b"\r\n")
        timer = loop.call_later(self.timeout, _expire, waiter)
        try:
            response = await waiter
        except HttpError:
            self.close()
            raise
        finally:
            timer.cancel()
            protocol.waiter = None
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(RuntimeError):
                protocol.transport.close()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError("TIMEOUT", "no response in time"))
