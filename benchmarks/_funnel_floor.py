"""The floor for ``benchmarks/funnel.py``: a bare asyncio group-commit writer and its client.

Length-prefixed msgpack frames (4-byte big-endian length) over a Unix socket, as the
funnel's wire protocol. Each turn of the writer's loop takes every request that arrived,
runs them in one ``BEGIN IMMEDIATE .. COMMIT`` and answers after COMMIT, one frame per
connection. Nothing else: no exactly-once records, no deadlines, no intake checks, no
savepoints, no stats, no write turn. The connection has onewriter's PRAGMAs
(``_writes_workloads.naive_connection``) and keeps SQLite's automatic checkpoint. The
same writer over a Redis list, at the end, is the floor for onewriter over Redis.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from multiprocessing.connection import Connection
from typing import Any

import msgpack

from ._writes_workloads import naive_connection

HEADER = struct.Struct(">I")


def _frames(buffer: bytearray, data: bytes) -> list[Any]:
    """Append ``data``; take every complete frame off the front, decoded."""
    buffer += data
    out, at = [], 0
    while len(buffer) - at >= 4:
        (size,) = HEADER.unpack_from(buffer, at)
        if len(buffer) - at - 4 < size:
            break
        out.append(msgpack.unpackb(buffer[at + 4 : at + 4 + size]))
        at += 4 + size
    del buffer[:at]
    return out


def _frame(body: Any) -> bytes:
    data = msgpack.packb(body)
    return HEADER.pack(len(data)) + data


# -- the writer (~60 lines) ---------------------------------------------------------------


class BareWriter:
    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn, self.loop = conn, loop
        self.pending: list[tuple[asyncio.Transport, dict[str, Any]]] = []
        self.scheduled = False
        self.sizes: list[int] = []

    def take(self, transport: asyncio.Transport, body: Any) -> None:
        self.pending.extend((transport, m) for m in (body if isinstance(body, list) else [body]))
        if not self.scheduled:  # after every read callback of this loop turn
            self.scheduled = True
            self.loop.call_soon(self.commit)

    def commit(self) -> None:
        batch, self.pending, self.scheduled = self.pending, [], False
        self.sizes.append(len(batch))
        replies: dict[asyncio.Transport, list[dict[str, Any]]] = {}
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        for transport, m in batch:
            try:
                cur = execute(m["sql"], m["params"])
                reply = {"id": m["id"], "ok": True, "result": [cur.rowcount, cur.lastrowid]}
            except sqlite3.Error as exc:
                reply = {"id": m["id"], "error": {"code": "OP_FAILED", "message": str(exc)}}
            replies.setdefault(transport, []).append(reply)
        try:
            execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                execute("ROLLBACK")
            failed = {"code": "COMMIT_FAILED", "message": str(exc)}
            replies = {
                t: [{"id": r["id"], "error": failed} for r in rs] for t, rs in replies.items()
            }
        for transport, out in replies.items():
            if not transport.is_closing():
                transport.write(_frame(out))


class _Peer(asyncio.Protocol):
    def __init__(self, writer: BareWriter) -> None:
        self.writer, self.buffer = writer, bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for body in _frames(self.buffer, data):
            self.writer.take(self.transport, body)


async def _serve(conn: sqlite3.Connection, socket_path: str, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    writer = BareWriter(conn, loop)
    server = await loop.create_unix_server(lambda: _Peer(writer), socket_path)
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)
    pipe.send("ready")
    await stop.wait()
    loop.remove_reader(pipe.fileno())
    server.close()
    sizes = sorted(writer.sizes) or [0]
    pipe.recv()
    pipe.send({"batches": len(writer.sizes), "batch_p50": sizes[len(sizes) // 2]})


def serve(path: str, socket_path: str, pipe: Connection) -> None:
    """Process entry: serve until the parent sends anything on ``pipe``, then report."""
    conn = naive_connection(path, "normal", explicit_transactions=True)
    try:
        asyncio.run(_serve(conn, socket_path, pipe))
    finally:
        conn.close()


# -- the client ----------------------------------------------------------------------------


class _Calls:
    """What both bare clients share: an id and a future per request; the requests made in
    one loop turn leave together, in ``flush``."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.out: list[dict[str, Any]] = []
        self.next_id = 0
        self.flushing = False

    def call(self, sql: str, params: list[Any]) -> asyncio.Future[Any]:
        self.next_id += 1
        future = self.loop.create_future()
        self.waiting[self.next_id] = future
        self.out.append({"id": self.next_id, "sql": sql, "params": params})
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        raise NotImplementedError


class BareClient(_Calls, asyncio.Protocol):
    """Pipelined requests on one connection; all those made in one loop turn go as one frame."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def flush(self) -> None:
        out, self.out, self.flushing = self.out, [], False
        self.transport.write(_frame(out if len(out) > 1 else out[0]))

    def data_received(self, data: bytes) -> None:
        for body in _frames(self.buffer, data):
            for reply in body:
                future = self.waiting.pop(reply["id"])
                if "error" in reply:
                    future.set_exception(RuntimeError(reply["error"]["message"]))
                else:
                    future.set_result(reply["result"])


async def connect(socket_path: str) -> BareClient:
    _, client = await asyncio.get_running_loop().create_unix_connection(BareClient, socket_path)
    return client


# -- the same over Redis ------------------------------------------------------------------
#
# Producers push the requests of one loop turn as one list element (with the key of their
# replies) and read their replies with BLMPOP; the writer pops every waiting element,
# runs them in one transaction and, in one write, pushes each producer's replies and asks
# for the next elements. Nothing else: no processing list (a writer that dies loses what
# it took), no exactly-once records, no MULTI, no deadlines, no intake checks.


def resp(*args: Any) -> bytes:
    """One Redis command as RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespLine(asyncio.Protocol):
    """Commands answered in order, hiredis parsing the replies."""

    def __init__(self) -> None:
        import hiredis

        self.reader = hiredis.Reader()
        self.waiting: list[asyncio.Future[Any]] = []
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, *commands: bytes) -> list[asyncio.Future[Any]]:
        futures = [self.loop.create_future() for _ in commands]
        self.waiting += futures
        self.transport.write(b"".join(commands))
        return futures

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.waiting.pop(0).set_result(reply)


async def _resp_line(host: str, port: int) -> RespLine:
    _, line = await asyncio.get_running_loop().create_connection(RespLine, host, port)
    return line


async def _serve_redis(
    conn: sqlite3.Connection, address: str, queue: str, pipe: Connection
) -> None:
    host, port = address.rsplit(":", 1)
    line = await _resp_line(host, int(port))
    sizes: list[int] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(pipe.fileno(), stop.set)
    pipe.send("ready")
    execute = conn.execute
    (taking,) = line.send(resp("BLMPOP", 0.2, 1, queue, "LEFT", "COUNT", 1000))
    while not stop.is_set():
        got = await taking
        if got is None:
            (taking,) = line.send(resp("BLMPOP", 0.2, 1, queue, "LEFT", "COUNT", 1000))
            continue
        replies: dict[bytes, list[dict[str, Any]]] = {}
        execute("BEGIN IMMEDIATE")
        for key, batch in map(msgpack.unpackb, got[1]):
            out = replies.setdefault(key, [])
            for m in batch:
                cur = execute(m["sql"], m["params"])
                out.append({"id": m["id"], "ok": True, "result": [cur.rowcount, cur.lastrowid]})
        execute("COMMIT")
        sizes.append(sum(map(len, replies.values())))
        pushes = [resp("RPUSH", key, msgpack.packb(out)) for key, out in replies.items()]
        *_, taking = line.send(*pushes, resp("BLMPOP", 0.2, 1, queue, "LEFT", "COUNT", 1000))
    sizes.sort()
    pipe.recv()
    pipe.send({"batches": len(sizes), "batch_p50": sizes[len(sizes) // 2] if sizes else 0})
    line.transport.close()


def serve_redis(path: str, address: str, queue: str, pipe: Connection) -> None:
    """Process entry: take from the Redis list ``queue`` at ``address`` (host:port) until
    the parent sends anything on ``pipe``, then report."""
    conn = naive_connection(path, "normal", explicit_transactions=True)
    try:
        asyncio.run(_serve_redis(conn, address, queue, pipe))
    finally:
        conn.close()


class BareRedisClient(_Calls):
    """Pipelined requests through Redis; all those made in one loop turn go as one element."""

    def __init__(self, pushes: RespLine, reads: RespLine, queue: str, key: bytes) -> None:
        super().__init__()
        self.pushes, self.reads, self.queue, self.key = pushes, reads, queue, key
        self.reading = False

    def flush(self) -> None:
        out, self.out, self.flushing = self.out, [], False
        self.pushes.send(resp("RPUSH", self.queue, msgpack.packb([self.key, out])))
        if not self.reading:
            self.reading = True
            self.loop.create_task(self.read())

    async def read(self) -> None:
        while self.waiting:
            (got,) = self.reads.send(resp("BLMPOP", 1, 1, self.key, "LEFT", "COUNT", 1000))
            reply = await got
            for element in reply[1] if reply else []:
                for r in msgpack.unpackb(element):
                    self.waiting.pop(r["id"]).set_result(r["result"])
        self.reading = False


async def connect_redis(address: str, queue: str, index: int) -> BareRedisClient:
    host, port = address.rsplit(":", 1)
    pushes = await _resp_line(host, int(port))
    reads = await _resp_line(host, int(port))
    return BareRedisClient(pushes, reads, queue, f"{queue}:bare-reply:{index}".encode())
