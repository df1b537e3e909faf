"""The writer's side of one stream connection (Unix socket, TCP): frames in, replies out.

Framing and delivery only; every message goes through the intake. A client that stops
reading its replies has its reads paused: it costs the writer no more than its buffers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ...errors import BadRequest, OneWriterError, TooLarge, Unauthorized
from ...wire import frames as proto
from ..engine import Request
from ..intake import Origin, error_body

if TYPE_CHECKING:
    from ..service import WriterService


class StreamPeer(asyncio.Protocol):
    """One client connection on the writer's loop."""

    def __init__(
        self,
        service: WriterService,
        origin: Origin,
        *,
        check_peer: Callable[[socket.socket], bool] | None = None,
    ) -> None:
        self.service = service
        self.intake = service.intake
        self.origin = origin
        self.check_peer = check_peer
        self.transport: asyncio.Transport | None = None
        self.reader = proto.FrameReader(service.config.max_frame)
        self.client: bytes | None = None
        self.greeted = False
        self.closed = False
        self._out: list[bytes] = []

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as one
        self.transport = cast(asyncio.Transport, transport)
        self.service.connections.add(self)
        if self.check_peer is not None:
            sock = transport.get_extra_info("socket")
            if sock is None or not self.check_peer(sock):
                self.refuse(Unauthorized("this user may not use the writer's socket"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.service.connections.discard(self)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.reader.feed(data):
                if self.closed:
                    break
                if self.greeted:
                    self.intake.take_body(self, body, self.answer)
                else:
                    self._first(body)
        except TooLarge as exc:
            self.refuse(exc)
        self.flush()

    # -- Sink (the engine delivers replies here) ----------------------------------------

    def answer(self, body: bytes) -> None:
        """An answer given at intake (a refusal, a control message)."""
        self._out.append(body)

    def deliver(self, requests: list[Request]) -> None:
        if not self.closed:
            self._out += [request.reply_body() for request in requests]

    def flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            if not self.closed and self.transport is not None:
                self.transport.write(proto.frames_packed(out, self.service.config.max_frame))

    # -- before hello ---------------------------------------------------------------------

    def refuse(self, error: OneWriterError) -> None:
        """Answer with ``error`` and close the connection."""
        self._out.append(error_body(None, error))
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _first(self, body: bytes) -> None:
        """The frame(s) before hello: the hello itself (TCP authenticates before it)."""
        try:
            decoded = proto.unpack(body)
        except BadRequest as exc:
            self.refuse(exc)  # before the hello, anything but a hello closes the line
            return
        for message in proto.messages(decoded):
            if self.closed:
                return
            if self.greeted:
                self.intake.take(self, message, self.answer)
            else:
                self.greet(message)

    def greet(self, message: object) -> None:
        try:
            self._out.append(self.intake.hello(self, message))
        except OneWriterError as exc:
            self.refuse(exc)
            return
        self.greeted = True
