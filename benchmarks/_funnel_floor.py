"""The floor for ``benchmarks/funnel.py``: a bare asyncio group-commit writer and its client.

Length-prefixed msgpack frames (4-byte big-endian length) over a Unix socket, as the
funnel's wire protocol. Each turn of the writer's loop takes every request that arrived,
runs them in one ``BEGIN IMMEDIATE .. COMMIT`` and answers after COMMIT, one frame per
connection. Nothing else: no exactly-once records, no deadlines, no intake checks, no
savepoints, no stats, no write turn. The connection has onewriter's PRAGMAs
(``_writes_workloads.naive_connection``) and keeps SQLite's automatic checkpoint.
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


class BareClient(asyncio.Protocol):
    """Pipelined requests on one connection; all those made in one loop turn go as one frame."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.out: list[dict[str, Any]] = []
        self.next_id = 0
        self.flushing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

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
