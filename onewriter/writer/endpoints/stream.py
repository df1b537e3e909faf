"""One client connection to the writer, over a stream transport (Unix socket, TCP).

Frames are read on the writer's event loop; requests are checked at intake (unknown
op, raw SQL not allowed, queue full, draining) and answered at once when refused, so
that nothing waits in the queue that will not run. A client that stops reading its
replies has its reads paused: it costs the writer no more than its own buffers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import reprlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import (
    BadRequest,
    OneWriterError,
    ReadsDisabled,
    SqlNotAllowed,
    TooLarge,
    Unauthorized,
    UnknownOp,
)
from ...wire import frames as proto
from ..engine import Request

if TYPE_CHECKING:
    from ..service import WriterService

log = logging.getLogger("onewriter.server")

_NO_ID = None
_SQLITE_INT_MAX = 2**63 - 1


def _is_sqlite_int(value: Any) -> bool:
    """A non-negative int that SQLite can store (``seq`` and ``ack`` go into the
    exactly-once table; a larger one would fail the whole batch, not just itself)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _SQLITE_INT_MAX


class ClientConnection(asyncio.Protocol):
    """The writer's side of one client connection."""

    def __init__(
        self,
        service: WriterService,
        *,
        allow_sql: bool,
        serves_reads: bool = True,
        check_peer: Callable[[socket.socket], bool] | None = None,
    ) -> None:
        self.service = service
        self.allow_sql = allow_sql
        self.serves_reads = serves_reads  # stats here; reads too on remote transports
        self.check_peer = check_peer
        self.transport: asyncio.Transport | None = None
        self.reader = proto.FrameReader(service.config.max_frame)
        self.client: bytes | None = None
        self.greeted = False
        self.closed = False
        self._out: list[bytes] = []

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
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
                self._handle_body(body)
        except TooLarge as exc:
            self.refuse(exc)
        self.flush()

    # -- Sink (the engine delivers replies here) ----------------------------------------

    def deliver(self, request: Request) -> None:
        if not self.closed:
            self._out.append(request.reply_body())

    def flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            if not self.closed and self.transport is not None:
                self.transport.write(proto.frames_packed(out, self.service.config.max_frame))

    # -- intake -------------------------------------------------------------------------

    def refuse(self, error: OneWriterError) -> None:
        """Answer with ``error`` and close the connection."""
        self._out.append(proto.pack({"id": _NO_ID, "error": error.to_wire()}))
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _reply_error(self, rid: Any, error: OneWriterError) -> None:
        self.service.engine_errors[error.code] += 1
        self._out.append(proto.pack({"id": rid, "error": error.to_wire()}))

    def _handle_body(self, body: bytes) -> None:
        if self.closed:
            return
        try:
            decoded = proto.unpack(body)
        except BadRequest as exc:
            self._reply_error(_NO_ID, exc)
            return
        for message in proto.messages(decoded):
            if self.closed:
                return
            if not self.greeted:  # anything but a hello (or a challenge answer) is refused
                self._hello(message if isinstance(message, dict) else {})
                continue
            if not isinstance(message, dict):
                self._reply_error(_NO_ID, BadRequest("a message must be a map"))
                continue
            self._request(message)

    def _hello(self, message: dict[str, Any]) -> None:
        if message.get("t") != "hello":
            self.refuse(BadRequest("the first message must be a hello"))
            return
        if message.get("v") != proto.PROTOCOL_VERSION:
            self.refuse(
                BadRequest(
                    f"protocol version {reprlib.repr(message.get('v'))} is not supported "
                    f"(this writer speaks {proto.PROTOCOL_VERSION})"
                )
            )
            return
        client = message.get("client")
        if client is not None and not (isinstance(client, bytes) and 1 <= len(client) <= 64):
            self.refuse(BadRequest("client id must be 1 to 64 bytes"))
            return
        self.client = client
        self.greeted = True
        self._out.append(
            proto.pack(
                {
                    "t": "hello",
                    "v": proto.PROTOCOL_VERSION,
                    "pid": self.service.pid,
                    "max_frame": self.service.config.max_frame,
                    "ops": sorted(op.name for op in self.service.ops),
                    "schema": self.service.schema_version,
                }
            )
        )

    def _request(self, m: dict[str, Any]) -> None:
        rid = m.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            self._reply_error(_NO_ID, BadRequest("every request needs an integer id"))
            return
        kind = m.get("t")
        if kind is not None:
            if not isinstance(kind, str):
                self._reply_error(rid, BadRequest("t must be a string"))
            elif kind == "stats" and not self.serves_reads:
                self._reply_error(rid, ReadsDisabled("no stats on this transport (remote_reads)"))
            elif kind == "stats":
                self._out.append(
                    proto.pack({"id": rid, "ok": True, "result": self.service.stats()})
                )
            elif kind == "ping":
                self._out.append(proto.pack({"id": rid, "ok": True, "result": None}))
            else:
                self._reply_error(rid, BadRequest(f"unknown message type {kind!r:.100}"))
            return
        try:
            request = self._build(rid, m)
        except OneWriterError as exc:
            self._reply_error(rid, exc)
            return
        ack = m.get("ack")
        if self.client is not None and isinstance(ack, int) and _is_sqlite_int(ack):
            self.service.engine.note_ack(self.client, ack)
        self.service.accept(request)

    def _build(self, rid: int, m: dict[str, Any]) -> Request:
        deadline_ms = m.get("deadline")
        timeout = self.service.config.request_timeout
        if deadline_ms is not None:
            if (
                not isinstance(deadline_ms, int | float)
                or isinstance(deadline_ms, bool)
                or math.isnan(deadline_ms)
            ):
                raise BadRequest("deadline must be a number of milliseconds")
            timeout = min(timeout, max(0.0, deadline_ms / 1000))
        deadline = time.monotonic() + timeout
        seq = m.get("seq")
        if seq is not None and not _is_sqlite_int(seq):
            raise BadRequest("seq must be an integer from 0 to 2**63 - 1")
        client = self.client if seq is not None else None
        retry = m.get("retry") is True
        name = m.get("op")
        if name is not None:
            if not isinstance(name, str):
                raise BadRequest("op must be a string")
            if name not in self.service.ops:
                raise UnknownOp(f"no op named {reprlib.repr(name)} is registered with the writer")
            args = m.get("args", ())
            kwargs = m.get("kwargs") or {}
            if not isinstance(args, list | tuple):
                raise BadRequest("args must be a list")
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise BadRequest("kwargs must be a map with string keys")
            return Request(
                self,
                rid,
                name=name,
                args=args,
                kwargs=kwargs,
                deadline=deadline,
                client=client,
                seq=seq,
                retry=retry,
            )
        sql = m.get("sql")
        if sql is not None:
            if not isinstance(sql, str):
                raise BadRequest("sql must be a string")
            if not self.allow_sql:
                raise SqlNotAllowed("raw SQL writes are disabled on this transport")
            params = m.get("params")
            many = m.get("many") is True
            if params is None:
                params = []
            if many:
                if not isinstance(params, list) or not all(
                    isinstance(p, list | dict) for p in params
                ):
                    raise BadRequest("params for many must be a list of lists or maps")
            elif not isinstance(params, list | dict):
                raise BadRequest("params must be a list or a map")
            return Request(
                self,
                rid,
                sql=sql,
                params=params,
                many=many,
                deadline=deadline,
                client=client,
                seq=seq,
                retry=retry,
            )
        raise BadRequest("a request needs an op or sql")
