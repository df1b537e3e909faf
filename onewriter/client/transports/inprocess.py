"""Links to the writer in this very process: the same frames, without a socket.

Messages are encoded and decoded as over a socket and go through the writer's intake, so
a request gets the same answer here as from any other process; only the kernel round
trip is saved (one thread-safe call per batch each way).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from ...errors import ShuttingDown, WriterUnavailable
from ...wire import frames as proto
from ...writer.engine import Request
from ...writer.intake import Origin
from ...writer.service import WriterService
from .base import Receiver

_SHUTTING_DOWN = ShuttingDown.code
_SHUTTING_DOWN_BYTES = _SHUTTING_DOWN.encode()


def _draining(message: Any) -> bool:
    error = message.get("error") if type(message) is dict else None
    return type(error) is dict and error.get("code") == _SHUTTING_DOWN


class _WriterSide:
    """The intake's peer: what the writer thread calls with outcomes."""

    origin: Origin

    def __init__(self, writer: WriterService, client: bytes) -> None:
        self.writer = writer
        self.origin = writer.local_origin
        self.client: bytes | None = client
        self._replies: list[bytes] = []  # filled and taken on the writer's thread only

    def answer(self, body: bytes) -> None:
        self._replies.append(body)

    def deliver(self, requests: list[Request]) -> None:
        self._replies += [request.reply_body() for request in requests]

    def flush(self) -> None:
        """The writer has handed over a batch's outcomes."""

    def take_replies(self) -> list[bytes]:
        replies, self._replies = self._replies, []
        return replies

    def submit(self, body: bytes) -> None:
        """Hand ``body`` to the writer; a stopped writer is a lost link."""
        try:
            self.writer.submit_threadsafe(self, body)
        except WriterUnavailable as exc:
            raise ConnectionResetError(str(exc)) from None


class InProcessSyncLink(_WriterSide):
    """One thread's line to the writer of this process."""

    def __init__(self, writer: WriterService, client: bytes) -> None:
        super().__init__(writer, client)
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._handed: list[bytes] = []  # replies handed from the writer's thread

    def flush(self) -> None:  # writer thread
        replies = self.take_replies()
        with self._lock:
            self._handed += replies
            self._ready.set()

    def send(self, body: bytes) -> None:
        self._ready.clear()
        self.submit(body)

    def receive(self, deadline: float) -> list[Any]:
        while True:
            if not self._ready.wait(max(0.0, deadline - time.monotonic())):
                if not self.writer.running:
                    raise ConnectionResetError("the writer in this process stopped")
                raise TimeoutError
            with self._lock:
                self._ready.clear()
                bodies, self._handed = self._handed, []
            if bodies:
                return proto.messages(proto.unpack(proto.list_body(bodies)))

    def close(self) -> None:
        pass


class InProcessAsyncLink(_WriterSide):
    """An event loop's pipelined line to the writer of this process."""

    def __init__(
        self,
        writer: WriterService,
        client: bytes,
        receiver: Receiver,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(writer, client)
        self.receiver = receiver
        self.loop = loop
        self.closed = False

    def flush(self) -> None:  # writer thread: one hop back per batch
        bodies = self.take_replies()
        if bodies and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._replied, bodies)

    def _replied(self, bodies: list[bytes]) -> None:
        body = proto.list_body(bodies)
        messages = proto.messages(proto.unpack(body))
        self.receiver.on_messages(messages)
        if (
            not self.closed
            and _SHUTTING_DOWN_BYTES in body  # rare: only then look at each reply
            and any(_draining(message) for message in messages)
        ):
            # re-sent to the next writer, as when a socket closes
            self.closed = True
            self.receiver.on_lost(self)

    def send(self, items: list[tuple[int, bytes]]) -> None:
        if self.closed:
            return
        try:
            self.submit(proto.list_body([body for _, body in items]))
        except ConnectionResetError:
            self.closed = True
            self.loop.call_soon(self.receiver.on_lost, self)

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.close()
