"""One intake for every origin: each message from this process, the Unix socket, TCP or
Redis is checked and dispatched here, by kind, from one table.

The same message therefore gets the same answer wherever it comes from; what differs by
origin is only what it is allowed (raw SQL, stats, reads), written in its
:class:`Origin`. Endpoints do framing, authentication and delivery, nothing else.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import (
    BadRequest,
    OneWriterError,
    ReadsDisabled,
    SqlNotAllowed,
    UnknownOp,
)
from ..wire import frames as proto
from .engine import Request, Sink

if TYPE_CHECKING:
    from .endpoints.reads import RemoteReads
    from .service import WriterService

#: ``seq`` and ``ack`` go into the exactly-once table: SQLite's largest integer (a larger
#: one would fail the whole batch, not just its request).
_SQLITE_INT_MAX = 2**63 - 1

#: Sends one reply body back to where a message came from.
Answer = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where messages come from and what they may ask for."""

    name: str  # "local", "unix", "tcp" or "redis": named in refusals
    allow_sql: bool
    stats: bool
    #: The reader pool that serves ``read`` here; ``None`` where reads are not served.
    reads: RemoteReads | None = None
    #: Whether acks free exactly-once records (Redis decides by its processing list).
    acks: bool = True


class Peer(Sink, Protocol):
    """One line into the writer as the intake sees it: replies to write requests come
    through :class:`Sink`; ``client`` is its id once it said hello."""

    origin: Origin
    client: bytes | None


def error_body(rid: Any, error: OneWriterError) -> bytes:
    return proto.pack({"id": rid, "error": error.to_wire()})


def ok_body(rid: Any, result: Any) -> bytes:
    return proto.pack({"id": rid, "ok": True, "result": result})


class Intake:
    """Checks every message and hands it on: writes to the service's queue, control
    messages to their handler in :attr:`kinds`."""

    def __init__(self, service: WriterService) -> None:
        self.service = service
        self.kinds: dict[str, Callable[[Peer, int, dict[str, Any], Answer], None]] = {
            "ping": self._ping,
            "stats": self._stats,
            "read": self._read,
        }

    # -- hello ---------------------------------------------------------------------------

    def hello(self, peer: Peer, message: Any) -> bytes:
        """Greet ``peer`` (its first message); raises the refusal, after which the line
        is closed."""
        if not isinstance(message, dict) or message.get("t") != "hello":
            raise BadRequest("the first message must be a hello")
        if message.get("v") != proto.PROTOCOL_VERSION:
            raise BadRequest(
                f"protocol version {reprlib.repr(message.get('v'))} is not supported "
                f"(this writer speaks {proto.PROTOCOL_VERSION})"
            )
        client = message.get("client")
        if client is not None and not (isinstance(client, bytes) and 1 <= len(client) <= 64):
            raise BadRequest("client id must be 1 to 64 bytes")
        peer.client = client
        service = self.service
        return proto.pack(
            {
                "t": "hello",
                "v": proto.PROTOCOL_VERSION,
                "pid": service.pid,
                "max_frame": service.config.max_frame,
                "ops": sorted(op.name for op in service.ops),
                "schema": service.schema_version,
            }
        )

    # -- every later message -------------------------------------------------------------

    def take_body(self, peer: Peer, body: bytes, answer: Answer) -> None:
        """Decode one frame body and take each message in it."""
        try:
            decoded = proto.unpack(body)
        except BadRequest as exc:
            self.refuse(answer, None, exc)
            return
        for message in proto.messages(decoded):
            self.take(peer, message, answer)

    def take(self, peer: Peer, m: Any, answer: Answer, tag: Any = None) -> None:
        """One message: a write is queued (its reply comes through ``peer``, with
        ``tag`` on its request), anything else is answered through ``answer`` now or,
        for a read, when it is done."""
        if type(m) is not dict:
            self.refuse(answer, None, BadRequest("a message must be a map"))
            return
        rid = m.get("id")
        if type(rid) is not int:
            self.refuse(answer, None, BadRequest("every request needs an integer id"))
            return
        kind = m.get("t")
        if kind is not None:
            handler = self.kinds.get(kind) if type(kind) is str else None
            if handler is None:
                what = f"unknown message type {reprlib.repr(kind)}"
                if type(kind) is not str:
                    what = "t must be a string"
                self.refuse(answer, rid, BadRequest(what))
                return
            handler(peer, rid, m, answer)
            return
        try:
            request = self.build(peer, rid, m, tag)
        except OneWriterError as exc:
            self.refuse(answer, rid, exc)
            return
        ack = m.get("ack")
        client = peer.client
        if type(ack) is int and client is not None and peer.origin.acks and ack >= 0:
            self.service.engine.note_ack(client, min(ack, _SQLITE_INT_MAX))
        self.service.accept(request)

    def refuse(self, answer: Answer, rid: Any, error: OneWriterError) -> None:
        self.service.engine_errors[error.code] += 1
        answer(error_body(rid, error))

    # -- control kinds -------------------------------------------------------------------

    def _ping(self, peer: Peer, rid: int, m: dict[str, Any], answer: Answer) -> None:
        answer(ok_body(rid, None))

    def _stats(self, peer: Peer, rid: int, m: dict[str, Any], answer: Answer) -> None:
        if not peer.origin.stats:
            self.refuse(answer, rid, _no_reads(peer.origin))
            return
        answer(ok_body(rid, self.service.stats()))

    def _read(self, peer: Peer, rid: int, m: dict[str, Any], answer: Answer) -> None:
        reads = peer.origin.reads
        if reads is None:
            self.refuse(answer, rid, _no_reads(peer.origin))
            return

        def done(body: bytes) -> None:  # later, on the writer's loop: send it now
            answer(body)
            peer.flush()

        reads.start(rid, m, done)

    # -- write requests --------------------------------------------------------------------

    def build(self, peer: Peer, rid: int, m: dict[str, Any], tag: Any = None) -> Request:
        """The engine's request for a write message, or the refusal raised."""
        get = m.get
        timeout = self.service.config.request_timeout
        deadline_ms = get("deadline")
        if deadline_ms is not None:
            kind = type(deadline_ms)
            if (kind is not float and kind is not int) or deadline_ms != deadline_ms:
                raise BadRequest("deadline must be a number of milliseconds")
            if deadline_ms < timeout * 1000:
                timeout = max(0.0, deadline_ms / 1000)
        deadline = monotonic() + timeout
        seq = get("seq")
        client = None
        if seq is not None:
            if type(seq) is not int or not 0 <= seq <= _SQLITE_INT_MAX:
                raise BadRequest("seq must be an integer from 0 to 2**63 - 1")
            client = peer.client
        retry = get("retry") is True
        name = get("op")
        if name is not None:
            if type(name) is not str:
                raise BadRequest("op must be a string")
            if name not in self.service.ops:
                raise UnknownOp(f"no op named {reprlib.repr(name)} is registered with the writer")
            args = get("args", ())
            kwargs = get("kwargs") or {}
            if type(args) is not list and type(args) is not tuple:
                raise BadRequest("args must be a list")
            if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
                raise BadRequest("kwargs must be a map with string keys")
            return Request(
                peer, rid, name, args, kwargs, None, None, False, deadline, client, seq, retry, tag
            )
        sql = get("sql")
        if sql is None:
            raise BadRequest("a request needs an op or sql")
        if type(sql) is not str:
            raise BadRequest("sql must be a string")
        if not peer.origin.allow_sql:
            raise SqlNotAllowed(
                f"raw SQL writes are disabled on this transport ({peer.origin.name})"
            )
        params = get("params")
        many = get("many") is True
        if params is None:
            params = []
        if many:
            if type(params) is not list or not all(
                type(p) is list or type(p) is dict for p in params
            ):
                raise BadRequest("params for many must be a list of lists or maps")
        elif type(params) is not list and type(params) is not dict:
            raise BadRequest("params must be a list or a map")
        return Request(
            peer, rid, None, (), {}, sql, params, many, deadline, client, seq, retry, tag
        )


def _no_reads(origin: Origin) -> ReadsDisabled:
    if origin.name in ("local", "unix"):
        return ReadsDisabled(
            "processes on the writer's host read on their own connections, not through the writer"
        )
    return ReadsDisabled(
        f"this writer serves no reads or stats over {origin.name} (Config.remote_reads)"
    )
