"""Channels to the writer over any transport: sync (one in flight per thread) and asyncio
(pipelined).

Both carry a client id and a sequence number on every write. When a link is lost (the
writer died, drained or stopped), a channel opens the next one (which may elect a new
writer) and re-sends what was not answered, marked as a retry; the writer's record of
committed ids keeps each write applied exactly once and returns the original result.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import (
    BadRequest,
    ClientTimeout,
    OneWriterError,
    ShuttingDown,
    TooLarge,
    error_from_wire,
)
from ..wire import frames as proto
from .transports.base import AsyncLink, SyncLink, Transport

#: Pause before re-sending to the next writer after the last one began to drain.
_HANDOVER_PAUSE = 0.005
#: How often an asyncio channel checks its requests against the client timeout.
_SWEEP_INTERVAL = 0.05
#: An asyncio channel tells the writer its ack on every 64th request.
_ACK_EVERY_MASK = 63


def new_client_id() -> bytes:
    return os.urandom(16)


def encode(pack: Callable[[Any], bytes], message: dict[str, Any], limit: int) -> bytes:
    """One request's message, encoded; refused here, before anything is sent, when it
    cannot be encoded or would be over the writer's frame limit (it would close the
    connection, and every re-send likewise)."""
    try:
        body = pack(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"the request cannot be encoded: {exc}") from None
    if len(body) > limit:
        raise too_large(len(body), limit)
    return body


def too_large(size: int, limit: int) -> TooLarge:
    return TooLarge(f"request of {size} bytes is over the frame limit of {limit}")


def reply_value(message: dict[str, Any]) -> Any:
    """The result of a reply, or its error raised."""
    error = message.get("error")
    if error is not None:
        raise error_from_wire(error)
    return message.get("result")


class _Line:
    """What both channels share: the transport, this line's client id and its ids."""

    def __init__(self, transport: Transport, config: Config) -> None:
        self.transport = transport
        self.config = config
        self.client = new_client_id()
        self.next_id = 0
        self.pack = proto.packer()  # a channel is used from one thread
        self._limit = config.max_frame
        self._timeout = config.client_timeout
        self._noreply = transport.fire_and_forget
        self._stamp = transport.stamps_client

    def message(self, fields: dict[str, Any], rid: int, write: bool) -> dict[str, Any]:
        """``fields`` as a request with id ``rid`` (taken over, not copied)."""
        message = fields
        message["id"] = rid
        if write:
            message["seq"] = rid
            if self._noreply:
                message["noreply"] = True
        if self._stamp:
            message["client"] = self.client
        return message


# -- sync ----------------------------------------------------------------------------------


class SyncChannel(_Line):
    """One thread's line to the writer: one request in flight at a time."""

    def __init__(self, transport: Transport, config: Config) -> None:
        super().__init__(transport, config)
        self.link: SyncLink | None = None

    def connect(self) -> None:
        """Reach the writer now (or become it), rather than at the first request."""
        if self.link is None:
            self.link = self._open(time.monotonic() + self.config.client_timeout)

    def call(self, fields: dict[str, Any], *, write: bool = True) -> Any:
        """Send a request and return its result, failing over as needed."""
        self.next_id += 1
        rid = self.next_id
        message = self.message(fields, rid, write)
        if write:
            message["ack"] = rid
        limit = self.config.max_frame
        body = encode(self.pack, message, limit)
        noreply = "noreply" in message
        deadline = time.monotonic() + self.config.client_timeout
        while True:
            link = self.link
            if link is None:
                link = self.link = self._open(deadline)
            try:
                link.send(body)
                if noreply:
                    return None
                return self._wait(link, rid, deadline)
            except ShuttingDown:
                self._drop()
                # The writer is draining: it releases the lock when done.
                time.sleep(min(_HANDOVER_PAUSE, max(0.0, deadline - time.monotonic())))
            except (ConnectionError, EOFError):
                self._drop()
            if time.monotonic() > deadline:
                raise ClientTimeout(
                    f"no reply within {self.config.client_timeout:.1f} s (writer changed)"
                )
            if write and "retry" not in message:
                message["retry"] = True
                body = encode(self.pack, message, limit)

    def _open(self, deadline: float) -> SyncLink:
        """A link to the writer, waiting for one to be elected (``failover_timeout``)."""
        give_up = min(deadline, time.monotonic() + self.config.failover_timeout)
        delay = 0.002
        while True:
            link = self.transport.open_sync(self.client)
            if link is not None:
                return link
            if time.monotonic() > give_up:
                raise self.transport.unavailable()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _wait(self, link: SyncLink, rid: int, deadline: float) -> Any:
        while True:
            try:
                replies = link.receive(deadline)
            except TimeoutError:
                self._drop()
                raise ClientTimeout("no reply from the writer in time") from None
            except OneWriterError:
                self._drop()  # a stream that could not be read (TOO_LARGE) is not used again
                raise
            for reply in replies:
                if not isinstance(reply, dict):
                    continue
                if reply.get("id") == rid:
                    return reply_value(reply)
                if reply.get("id") is None and "error" in reply:
                    raise error_from_wire(reply["error"])

    def _drop(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()

    def close(self) -> None:
        self._drop()


# -- asyncio -------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("body", "deadline", "future", "message")

    def __init__(
        self, future: asyncio.Future[Any], message: dict[str, Any], body: bytes, deadline: float
    ) -> None:
        self.future = future
        self.message = message
        self.body = body
        self.deadline = deadline


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Resolve a future unless it is already done (cancelled or timed out)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class AsyncChannel(_Line):
    """A pipelined line to the writer for one event loop: many requests in flight; those
    made in one turn of the loop leave together."""

    def __init__(
        self, transport: Transport, config: Config, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(transport, config)
        self.loop = loop
        self.pending: dict[int, _Pending] = {}
        self.link: AsyncLink | None = None
        self._out: list[tuple[int, bytes]] = []
        self._flush_scheduled = False
        self._finding: asyncio.Task[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._connect_error: BaseException | None = None  # why the last search failed
        self.closed = False

    async def connect(self) -> None:
        """Reach the writer now (or become it), rather than at the first request."""
        if self.link is None:
            self._start_finding()
            assert self._finding is not None
            await asyncio.shield(self._finding)
            if self.link is None:
                raise self._connect_error or self.transport.unavailable()

    def call(self, fields: dict[str, Any], *, write: bool = True) -> asyncio.Future[Any]:
        """Send a request; the future resolves with its result.

        Takes ownership of ``fields`` (it becomes the message). The entry leaves
        ``pending`` when it is resolved, timed out, or found cancelled. This is the hot
        path of every funnelled write: it is written out rather than factored.
        """
        self.next_id = rid = self.next_id + 1
        fields["id"] = rid
        pending = self.pending
        if write:
            fields["seq"] = rid
            if not rid & _ACK_EVERY_MASK:
                # Every seq below the oldest unanswered one has been answered: the writer
                # may forget their records (it prunes in steps, so now and then is enough).
                fields["ack"] = next(iter(pending), rid)
            if self._noreply:
                fields["noreply"] = True
        if self._stamp:
            fields["client"] = self.client
        loop = self.loop
        future = loop.create_future()
        try:
            body = self.pack(fields)
        except (TypeError, ValueError, OverflowError) as exc:
            future.set_exception(BadRequest(f"the request cannot be encoded: {exc}"))
            return future
        if len(body) > self._limit:
            future.set_exception(too_large(len(body), self._limit))
            return future
        pending[rid] = _Pending(future, fields, body, loop.time() + self._timeout)
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        if self.link is None:
            self._start_finding()
        else:
            self._out.append((rid, body))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        return future

    # -- sending ------------------------------------------------------------------------

    def _send(self, rid: int, entry: _Pending) -> None:
        if self.link is None:
            self._start_finding()
            return
        self._out.append((rid, entry.body))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        self._out = []
        link = self.link
        if out and link is not None:
            link.send(out)
        elif out:
            self._start_finding()

    def _start_finding(self) -> None:
        if self._finding is None or self._finding.done():
            self._finding = self.loop.create_task(self._find_link())

    async def _find_link(self) -> None:
        """Open a link (the writer may have to be elected), then (re-)send everything
        unanswered, marked as retries."""
        deadline = time.monotonic() + self.config.failover_timeout
        delay = 0.002
        self._connect_error = None
        while not self.closed:
            try:
                link = await self.transport.open_async(self.client, self)
            except OneWriterError as exc:  # refused: authentication, or a hello refused
                self._fail_all(exc)
                return
            if link is not None:
                self.link = link
                self._resend_all()
                return
            if time.monotonic() > deadline:
                self._fail_all(self.transport.unavailable())
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _fail_all(self, error: BaseException) -> None:
        self._connect_error = error
        for rid in list(self.pending):
            self._resolve(rid, None, error)

    def _resend_all(self) -> None:
        limit = self.config.max_frame
        for rid, entry in list(self.pending.items()):
            if entry.future.done():
                del self.pending[rid]
                continue
            message = entry.message
            if "seq" in message and "retry" not in message:
                message["retry"] = True
                entry.body = encode(self.pack, message, limit)
            self._send(rid, entry)

    # -- Receiver (the link reports here) -----------------------------------------------

    def on_messages(self, messages: list[Any]) -> None:
        """Replies, as decoded from one frame or list element. Written out, as ``call``:
        every funnelled write's answer passes here."""
        pending = self.pending
        for message in messages:
            if type(message) is not dict:
                continue
            error = message.get("error")
            rid: Any = message.get("id")
            if error is None:
                entry = pending.pop(rid, None)
                if entry is not None and not entry.future.done():
                    entry.future.set_result(message.get("result"))
                continue
            exc = error_from_wire(error)
            if not isinstance(exc, ShuttingDown):  # else re-sent once this link is lost
                self._resolve(rid, None, exc)

    def on_sent(self, rids: list[int]) -> None:
        if not self._noreply:  # only fire-and-forget writes are settled by sending
            return
        pending = self.pending
        for rid in rids:
            entry = pending.get(rid)
            if entry is not None and "noreply" in entry.message:
                self._resolve(rid, None, None)

    def on_failed(self, rids: list[int], error: BaseException) -> None:
        for rid in rids:
            self._resolve(rid, None, error)

    def on_unreadable(self, link: AsyncLink, error: BaseException) -> None:
        """The link received what it could not read (a frame over ``max_frame``): what
        was in flight on it fails with that error rather than being sent again, since
        the same answer would come back."""
        if self.link is link:
            self.link = None
        for rid in list(self.pending):
            self._resolve(rid, None, error)

    def on_lost(self, link: AsyncLink) -> None:
        if self.link is not link:
            return
        self.link = None
        if self.pending and not self.closed:
            self.loop.call_later(_HANDOVER_PAUSE, self._start_finding)

    def waiting(self) -> bool:
        return bool(self.pending) and not self.closed

    # -- bookkeeping ----------------------------------------------------------------------

    def _resolve(self, rid: Any, value: Any, error: BaseException | None) -> None:
        entry = self.pending.pop(rid, None)
        if entry is not None:
            _settle(entry.future, value, error)

    def _sweep(self) -> None:
        """Fail requests past the client timeout (one timer per channel, not per request)."""
        self._sweeper = None
        if self.closed or not self.pending:
            return
        now = self.loop.time()
        pending = self.pending
        for rid, entry in list(pending.items()):
            if entry.future.done():
                del pending[rid]  # cancelled by its caller
            elif entry.deadline <= now:
                del pending[rid]
                _settle(
                    entry.future,
                    None,
                    ClientTimeout(f"no reply within {self.config.client_timeout:.1f} s"),
                )
        self._sweeper = self.loop.call_later(_SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        self.closed = True
        if self._finding is not None:
            self._finding.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        link, self.link = self.link, None
        if link is not None:
            link.close()

    async def aclose(self) -> None:
        """Close, and release what the link holds that only a coroutine can close."""
        link = self.link
        self.close()
        if link is not None:
            await link.aclose()
