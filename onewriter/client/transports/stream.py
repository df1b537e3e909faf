"""Links over a byte stream (Unix socket, TCP): length-prefixed frames, hello first.

The opening differs per transport (a path, or an address and an authentication); what
follows the hello is the same, and lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from ...errors import OneWriterError, Unauthorized, error_from_wire
from ...ops import Ops
from ...wire import frames as proto
from ..differences import warn_writer_differences
from .base import AsyncLink, Receiver

#: errno values meaning "no writer is listening at that address right now".
NO_LISTENER = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EAGAIN}
HELLO_TIMEOUT = 5.0


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


class Greeting:
    """What a hello is checked against: this side's ops and migrations."""

    def __init__(self, ops: Ops, migrations: int, name: str) -> None:
        self.ops = ops
        self.migrations = migrations
        self.name = name

    def check(self, reply: Any) -> None:
        check_hello(reply)
        warn_writer_differences(reply, self.ops, self.migrations, self.name)


# -- sync ----------------------------------------------------------------------------------


class SocketLink:
    """A blocking socket, one request in flight."""

    def __init__(self, sock: socket.socket, reader: proto.FrameReader) -> None:
        self.sock = sock
        self.reader = reader

    def send(self, body: bytes) -> None:
        self.sock.sendall(proto.HEADER.pack(len(body)) + body)

    def receive(self, deadline: float) -> list[Any]:
        sock = self.sock
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            data = sock.recv(262144)
            if not data:
                raise ConnectionResetError("the writer closed the connection")
            out: list[Any] = []
            for body in self.reader.feed(data):
                out += proto.messages(proto.unpack(body))
            if out:
                return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def greet_socket(
    sock: socket.socket, client: bytes, max_frame: int, greeting: Greeting
) -> SocketLink:
    """Say hello on a connected socket (closed on failure)."""
    reader = proto.FrameReader(max_frame)
    try:
        sock.sendall(proto.frame(hello_message(client)))
        greeting.check(read_one_message(sock, reader))
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return SocketLink(sock, reader)


# -- asyncio -------------------------------------------------------------------------------


class StreamLink(asyncio.Protocol):
    """A pipelined stream on an event loop; replies go to the receiver."""

    def __init__(self, receiver: Receiver, max_frame: int, loop: asyncio.AbstractEventLoop) -> None:
        self.receiver = receiver
        self.max_frame = max_frame
        self.reader = proto.FrameReader(max_frame)
        self.hello: asyncio.Future[Any] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.reader.feed(data):
                messages = proto.messages(proto.unpack(body))
                if not self.hello.done():
                    self.hello.set_result(messages[0])
                    messages = messages[1:]
                self.receiver.on_messages(messages)
        except OneWriterError as exc:
            if not self.hello.done():
                self.hello.set_exception(exc)
            else:
                self.receiver.on_unreadable(self, exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_exception(ConnectionResetError("closed during hello"))
        self.receiver.on_lost(self)

    def send(self, items: list[tuple[int, bytes]]) -> None:
        if self.transport is not None:
            bodies = [body for _, body in items]
            self.transport.write(proto.frames_packed(bodies, self.max_frame))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def aclose(self) -> None:
        self.close()


async def greet_stream(
    open_transport: Callable[[Callable[[], StreamLink]], Any],
    receiver: Receiver,
    client: bytes,
    max_frame: int,
    greeting: Greeting,
) -> AsyncLink | None:
    """Open a stream with ``open_transport(factory)`` (a coroutine giving
    ``(transport, link)``) and say hello; ``None`` when nobody listens."""
    loop = asyncio.get_running_loop()
    link: StreamLink
    try:
        _, link = await open_transport(lambda: StreamLink(receiver, max_frame, loop))
    except OSError as exc:
        if exc.errno in NO_LISTENER or isinstance(exc, ConnectionError):
            return None
        raise
    assert link.transport is not None
    link.transport.write(proto.frame(hello_message(client)))
    try:
        reply = await asyncio.wait_for(link.hello, HELLO_TIMEOUT)
    except (ConnectionError, TimeoutError):
        link.close()
        return None
    try:
        greeting.check(reply)
    except BaseException:
        link.close()
        raise
    return link
