"""Channels to the writer: sync (one in flight per thread) and asyncio (pipelined).

Both carry a client id and a sequence number on every write. When the writer dies or
drains, a channel finds the next writer (or becomes it) and re-sends what was not
answered, marked as a retry; the writer's record of committed ids keeps each write
applied exactly once and returns the original result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from typing import Any

from ..errors import (
    ClientTimeout,
    OneWriterError,
    ShuttingDown,
    TooLarge,
    WriterUnavailable,
    error_from_wire,
)
from ..wire import frames as proto
from ..writer.engine import Request
from ..writer.service import WriterService
from .core import NO_LISTENER, Core, check_hello, hello_message, reply_value
from .differences import warn_writer_differences


def new_client_id() -> bytes:
    return os.urandom(16)


def local_request(
    sink: Any, rid: int, fields: dict[str, Any], client: bytes, retry: bool
) -> Request:
    """A request for the writer in this process, built from wire-style fields."""
    timeout_ms = fields.get("deadline")
    deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms is not None else None
    seq = fields.get("seq")
    return Request(
        sink,
        rid,
        name=fields.get("op"),
        args=fields.get("args", ()),
        kwargs=fields.get("kwargs"),
        sql=fields.get("sql"),
        params=fields.get("params", ()),
        many=bool(fields.get("many", False)),
        deadline=deadline,
        client=client if seq is not None else None,
        seq=seq,
        retry=retry,
    )


def local_outcome(request: Request) -> Any:
    if request.error is not None:
        raise request.error
    assert request.encoded is not None
    return proto.unpack(request.encoded)


# -- sync ----------------------------------------------------------------------------------


class _Waiter:
    """A sink for one local request whose caller blocks on it."""

    __slots__ = ("event", "request")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.request: Request | None = None

    def deliver(self, request: Request) -> None:
        self.request = request

    def flush(self) -> None:
        self.event.set()


class SyncChannel:
    """One thread's line to the writer: one request in flight at a time."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.client = new_client_id()
        self.seq = 0
        self.sock: socket.socket | None = None
        self.reader = proto.FrameReader(core.config.max_frame)

    def call(self, fields: dict[str, Any], *, write: bool = True) -> Any:
        """Send a request and return its result, failing over as needed."""
        self.seq += 1
        rid = self.seq
        message = {"id": rid, **fields}
        if write:
            message["seq"] = rid
            message["ack"] = rid
        config = self.core.config
        deadline = time.monotonic() + config.client_timeout
        retry = False
        while True:
            target: WriterService | socket.socket
            if self.sock is not None:
                target = self.sock
            else:
                target = self.core.find_writer(self.client)
                if isinstance(target, socket.socket):
                    self.sock = target
                    self.reader = proto.FrameReader(config.max_frame)
            try:
                if isinstance(target, WriterService):
                    return self._call_local(target, rid, message, retry, deadline)
                return self._call_socket(target, rid, message, retry, deadline)
            except ShuttingDown:
                self._drop()
                self._pause_for_handover(deadline)
            except (ConnectionError, EOFError, BrokenPipeError):
                self._drop()
            except WriterUnavailable:
                self._drop()
                if time.monotonic() > deadline:
                    raise
                continue
            retry = True
            if time.monotonic() > deadline:
                raise ClientTimeout(
                    f"no reply within {config.client_timeout:.1f} s (writer changed)"
                )

    def _pause_for_handover(self, deadline: float) -> None:
        # The writer is draining: it releases the lock when done. Give it a moment.
        time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))

    def _call_local(
        self,
        writer: WriterService,
        rid: int,
        message: dict[str, Any],
        retry: bool,
        deadline: float,
    ) -> Any:
        kind = message.get("t")
        if kind is not None:
            return writer.stats_threadsafe() if kind == "stats" else None
        waiter = _Waiter()
        writer.submit_threadsafe(local_request(waiter, rid, message, self.client, retry))
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
            raise ClientTimeout("no reply from the writer in this process in time")
        assert waiter.request is not None
        return local_outcome(waiter.request)

    def _call_socket(
        self,
        sock: socket.socket,
        rid: int,
        message: dict[str, Any],
        retry: bool,
        deadline: float,
    ) -> Any:
        if retry:
            message["retry"] = True
        data = proto.frame(message)
        limit = self.core.config.max_frame
        if len(data) - proto.HEADER_SIZE > limit:
            # The writer would close the connection on it, and every re-send likewise.
            raise TooLarge(f"request of {len(data)} bytes is over the frame limit of {limit}")
        sock.sendall(data)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._drop()
                raise ClientTimeout("no reply from the writer in time")
            sock.settimeout(remaining)
            try:
                data = sock.recv(262144)
            except TimeoutError:
                self._drop()
                raise ClientTimeout("no reply from the writer in time") from None
            if not data:
                raise ConnectionResetError("the writer closed the connection")
            for body in self.reader.feed(data):
                for reply in proto.messages(proto.unpack(body)):
                    if isinstance(reply, dict) and reply.get("id") == rid:
                        return reply_value(reply)
                    if isinstance(reply, dict) and reply.get("id") is None and "error" in reply:
                        raise error_from_wire(reply["error"])

    def _drop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._drop()


# -- asyncio -------------------------------------------------------------------------------

#: How often a channel checks its requests against the client timeout.
_SWEEP_INTERVAL = 0.05


class _Pending:
    __slots__ = ("deadline", "future", "message")

    def __init__(
        self, future: asyncio.Future[Any], message: dict[str, Any], deadline: float
    ) -> None:
        self.future = future
        self.message = message
        self.deadline = deadline


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Resolve a future unless it is already done (cancelled or timed out)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class _AsyncLocalSink:
    """Hands a batch's outcomes to the channel's loop in one thread-safe call."""

    __slots__ = ("_done", "channel")

    def __init__(self, channel: AsyncChannel) -> None:
        self.channel = channel
        self._done: list[Request] = []

    def deliver(self, request: Request) -> None:
        self._done.append(request)

    def flush(self) -> None:
        done, self._done = self._done, []
        loop = self.channel.loop
        if done and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.channel._local_done, done)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, channel: AsyncChannel) -> None:
        self.channel = channel
        self.reader = proto.FrameReader(channel.core.config.max_frame)
        self.hello: asyncio.Future[Any] = channel.loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.reader.feed(data):
                for message in proto.messages(proto.unpack(body)):
                    if not self.hello.done():
                        self.hello.set_result(message)
                    else:
                        self.channel._on_message(self, message)
        except OneWriterError as exc:
            if not self.hello.done():
                self.hello.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_exception(ConnectionResetError("closed during hello"))
        self.channel._on_lost(self)


class AsyncChannel:
    """A pipelined line to the writer for one event loop: many requests in flight."""

    def __init__(self, core: Core, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.client = new_client_id()
        self.next_id = 0
        self.pending: dict[int, _Pending] = {}
        self.protocol: _StreamProtocol | None = None
        self.local: WriterService | None = None
        self._sink = _AsyncLocalSink(self)
        self._out: list[dict[str, Any]] = []
        self._flush_scheduled = False
        self._finding: asyncio.Task[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._failure: BaseException | None = None
        self.closed = False

    def call(self, fields: dict[str, Any], *, write: bool = True) -> asyncio.Future[Any]:
        """Send a request; the future resolves with its result.

        Takes ownership of ``fields`` (it becomes the message). The entry leaves
        ``pending`` when it is resolved, timed out, or found cancelled.
        """
        self.next_id += 1
        rid = self.next_id
        message = fields
        message["id"] = rid
        if write:
            message["seq"] = rid
        loop = self.loop
        future = loop.create_future()
        entry = _Pending(future, message, loop.time() + self.core.config.client_timeout)
        self.pending[rid] = entry
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        self._send(rid, entry, retry=False)
        return future

    # -- sending ------------------------------------------------------------------------

    def _send(self, rid: int, entry: _Pending, *, retry: bool) -> None:
        if retry:
            entry.message["retry"] = True
        local = self.local
        if local is not None and local.running:
            kind = entry.message.get("t")
            if kind is not None:
                self.loop.create_task(self._local_control(rid, local, kind))
                return
            request = local_request(self._sink, rid, entry.message, self.client, retry)
            try:
                local.submit_threadsafe(request)
                return
            except WriterUnavailable:
                self.local = None
        protocol = self.protocol
        if protocol is not None and protocol.transport is not None:
            if "seq" in entry.message:
                entry.message["ack"] = next(iter(self.pending))
            self._out.append(entry.message)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)
            return
        self._start_finding()

    async def _local_control(self, rid: int, local: WriterService, kind: str) -> None:
        value = None
        if kind == "stats":
            value = await self.loop.run_in_executor(None, local.stats_threadsafe)
        self._resolve(rid, value, None)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        protocol = self.protocol
        if out and protocol is not None and protocol.transport is not None:
            protocol.transport.write(b"".join(self._frames(out)))

    def _frames(self, out: list[dict[str, Any]]) -> list[bytes]:
        """``out`` in as few frames as the writer accepts (``max_frame``): a frame over
        it would close the connection, and every re-send would meet the same fate."""
        data = proto.frame(out if len(out) > 1 else out[0])
        limit = self.core.config.max_frame
        if len(data) - proto.HEADER_SIZE <= limit:
            return [data]
        if len(out) == 1:
            error = TooLarge(f"request of {len(data)} bytes is over the frame limit of {limit}")
            self._resolve(out[0]["id"], None, error)
            return []
        half = len(out) // 2
        return self._frames(out[:half]) + self._frames(out[half:])

    def _start_finding(self) -> None:
        if self._finding is None or self._finding.done():
            self._finding = self.loop.create_task(self._find_writer())

    async def _find_writer(self) -> None:
        """Reach the writer (or become it), then (re-)send everything unanswered."""
        core = self.core
        deadline = time.monotonic() + core.config.failover_timeout
        delay = 0.002
        while not self.closed and self.pending:
            local = core.running_local_writer()
            if local is None and core.joins_others:
                protocol = await self._connect()
                if protocol is not None:
                    self.protocol = protocol
                    self._resend_all()
                    return
            if local is None:
                local = await self.loop.run_in_executor(None, core.try_become_writer)
            if local is not None:
                self.local = local
                self._resend_all()
                return
            if time.monotonic() > deadline:
                error = core.unavailable(core.why_unavailable())
                for rid in list(self.pending):
                    self._resolve(rid, None, error)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _connect(self) -> _StreamProtocol | None:
        try:
            _, protocol = await self.core.open_stream(self.loop, lambda: _StreamProtocol(self))
        except OSError as exc:
            if exc.errno in NO_LISTENER or isinstance(exc, ConnectionError):
                return None
            raise
        except OneWriterError as exc:  # refused before hello (the TCP transport's auth)
            for rid in list(self.pending):
                self._resolve(rid, None, exc)
            return None
        assert protocol.transport is not None
        protocol.transport.write(proto.frame(hello_message(self.client)))
        try:
            reply = await asyncio.wait_for(protocol.hello, 5.0)
        except (ConnectionError, TimeoutError):
            protocol.transport.close()
            return None
        try:
            check_hello(reply)
        except OneWriterError as exc:
            protocol.transport.close()
            for rid in list(self.pending):
                self._resolve(rid, None, exc)
            return None
        core = self.core
        warn_writer_differences(reply, core.ops, len(core.config.migrations), core.database)
        return protocol

    def _resend(self, rid: int, entry: _Pending) -> None:
        if not entry.future.done():
            self._send(rid, entry, retry="seq" in entry.message)

    def _resend_all(self) -> None:
        for rid, entry in list(self.pending.items()):
            if entry.future.done():
                del self.pending[rid]
            else:
                self._send(rid, entry, retry="seq" in entry.message)

    # -- receiving ----------------------------------------------------------------------

    def _on_message(self, protocol: _StreamProtocol, message: Any) -> None:
        if not isinstance(message, dict):
            return
        rid = message.get("id")
        error = message.get("error")
        if rid is None:
            if error is not None and protocol.transport is not None:
                protocol.transport.close()
            return
        if error is not None:
            exc = error_from_wire(error)
            if isinstance(exc, ShuttingDown):
                return  # re-sent to the next writer once this connection closes
            self._resolve(rid, None, exc)
        else:
            self._resolve(rid, message.get("result"), None)

    def _local_done(self, requests: list[Request]) -> None:
        for request in requests:
            if isinstance(request.error, ShuttingDown):
                self.local = None
                entry = self.pending.get(request.rid)
                if entry is not None:
                    self.loop.call_later(0.005, self._resend, request.rid, entry)
                continue
            try:
                value = local_outcome(request)
            except OneWriterError as exc:
                self._resolve(request.rid, None, exc)
            else:
                self._resolve(request.rid, value, None)

    def _on_lost(self, protocol: _StreamProtocol) -> None:
        if self.protocol is not protocol:
            return
        self.protocol = None
        if self.pending and not self.closed:
            self._start_finding()

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
                    ClientTimeout(f"no reply within {self.core.config.client_timeout:.1f} s"),
                )
        self._sweeper = self.loop.call_later(_SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        self.closed = True
        if self._finding is not None:
            self._finding.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
