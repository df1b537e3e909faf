"""The asyncio client's own CPU per write: what a funnelled write costs the process that
sends it, with no socket and no writer to share the machine with.

Each variant keeps 32 writes in flight on one event loop, as each client of
``benchmarks.funnel`` does. A stand-in writer answers every flush on the next turn of
the loop: it decodes the requests and encodes their replies, in each protocol's shape,
so its work is counted in every row alike. Variants:

  floor         the bare client of ``_funnel_floor.py`` (an id and a future per request)
  onewriter     ``AsyncDatabase.execute_write`` through its channel
  written out   the same request and reply in one function: sequence number, ack,
                deadline, client-timeout entry and size check all kept, the channel of
                the running loop found on each call as the face must
  channel once  the same, with the channel found once for the whole run

The written-out variants are measures, not a proposed client: they bound what writing the
request path out would save (docs/design.md, "Where the funnel stops in Python").

    python -m benchmarks.client_path               # 18 rounds of 0.7 s a variant
    python -m benchmarks.client_path --quick       # 3 rounds of 0.3 s, for a smoke run
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

import onewriter
from onewriter.cli.tables import format_table
from onewriter.client.channel import _ACK_EVERY_MASK, AsyncChannel, _Pending
from onewriter.wire import frames as proto
from onewriter.writer.direct import WriteResult, write_result

from . import _cli, _report
from . import _funnel_floor as floor
from ._writes_workloads import PAYLOAD
from .funnel import run_lanes

IN_FLIGHT = 32
SQL = "INSERT INTO items(process, payload) VALUES (?, ?)"
PARAMS = [1, PAYLOAD]
VARIANTS = ("floor", "onewriter", "written out", "channel once")


class _AnsweringLink:
    """A channel's link whose writer answers each flush on the next loop turn."""

    def __init__(self, channel: AsyncChannel) -> None:
        self.channel = channel
        self.rowid = 0

    def send(self, items: list[tuple[int, bytes]]) -> None:
        requests = proto.messages(proto.unpack(proto.list_body([body for _, body in items])))
        replies = []
        for request in requests:
            self.rowid += 1
            result = {"rowcount": 1, "lastrowid": self.rowid, "rows": []}
            replies.append({"id": request["id"], "ok": True, "result": result})
        body = msgpack.packb(replies)
        self.channel.loop.call_soon(self._deliver, body)

    def _deliver(self, body: bytes) -> None:
        self.channel.on_messages(proto.messages(proto.unpack(body)))

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class _AnsweringTransport:
    """The bare client's transport, answered likewise."""

    def __init__(self, client: floor.BareClient) -> None:
        self.client = client
        self.rowid = 0

    def write(self, data: bytes) -> None:
        body = msgpack.unpackb(data[4:])
        replies = []
        for request in body if isinstance(body, list) else [body]:
            self.rowid += 1
            replies.append({"id": request["id"], "ok": True, "result": [1, self.rowid]})
        self.client.loop.call_soon(self.client.data_received, floor._frame(replies))


async def _drive(write: Callable[[], Awaitable[Any]], seconds: float) -> float:
    """CPU µs per acknowledged write, ``IN_FLIGHT`` lanes for ``seconds``."""
    await write()
    cpu = time.process_time()
    acked = await run_lanes(write, IN_FLIGHT, seconds)
    return (time.process_time() - cpu) / acked * 1e6


def _database(directory: str) -> tuple[onewriter.AsyncDatabase, AsyncChannel]:
    """A client face whose channel has an answering link (no writer is ever sought)."""
    sock = os.path.join(directory, "none.sock")
    db = onewriter.connect_async(
        os.path.join(directory, "bench.db"), role="client", writes="funnel", socket_path=sock
    )
    channel = db._channel(db._live_core())
    channel.link = _AnsweringLink(channel)
    return db, channel


def _written_out(
    db: onewriter.AsyncDatabase, once: AsyncChannel | None
) -> Callable[[], Awaitable[WriteResult]]:
    """``execute_write``'s request and reply in one function, every guarantee kept."""
    deadline_ms = db.config.request_timeout * 1000

    async def execute_write(sql: str, params: Any) -> WriteResult:
        channel = once or db._channel(db._live_core())
        loop = channel.loop
        channel.next_id = rid = channel.next_id + 1
        fields = {"sql": sql, "params": params, "deadline": deadline_ms, "id": rid, "seq": rid}
        pending = channel.pending
        if not rid & _ACK_EVERY_MASK:
            fields["ack"] = next(iter(pending), rid)
        future = loop.create_future()
        body = channel.pack(fields)
        if len(body) > channel._limit:
            raise ValueError("over the frame limit")
        pending[rid] = _Pending(future, fields, body, loop.time() + channel._timeout)
        channel._out.append((rid, body))
        if not channel._flush_scheduled:
            channel._flush_scheduled = True
            loop.call_soon(channel._flush)
        value = await future
        return write_result(value["rowcount"], value["lastrowid"], value["rows"])

    return lambda: execute_write(SQL, PARAMS)


async def _measure(variant: str, seconds: float) -> float:
    if variant == "floor":
        client = floor.BareClient()
        client.transport = _AnsweringTransport(client)  # type: ignore[assignment]
        return await _drive(lambda: client.call(SQL, PARAMS), seconds)
    with tempfile.TemporaryDirectory() as directory:
        db, channel = _database(directory)
        try:
            if variant == "onewriter":
                return await _drive(lambda: db.execute_write(SQL, PARAMS), seconds)
            once = channel if variant == "channel once" else None
            return await _drive(_written_out(db, once), seconds)
        finally:
            await db.close()


def _per_call(stmt: str, number: int = 200_000) -> float:
    """µs per call of ``stmt`` inside a running loop."""

    async def timed() -> float:
        spent = timeit.timeit(stmt, globals={"asyncio": asyncio, "os": os}, number=number)
        return spent / number * 1e6

    return asyncio.run(timed())


def _decode_costs() -> list[list[str]]:
    """µs per message to decode a frame of 32 replies and one of 32 requests, with msgpack
    (what onewriter uses) and msgspec (weighed against it in docs/design.md)."""
    replies = msgpack.packb(
        [
            {"id": i, "ok": True, "result": {"rowcount": 1, "lastrowid": i, "rows": []}}
            for i in range(IN_FLIGHT)
        ]
    )
    requests = msgpack.packb(
        [
            {"sql": SQL, "params": PARAMS, "deadline": 30000.0, "id": i, "seq": i}
            for i in range(IN_FLIGHT)
        ]
    )
    decoders: dict[str, Callable[[bytes], Any]] = {"msgpack": proto.unpack}
    try:
        import msgspec
    except ImportError:
        pass
    else:
        decoders["msgspec"] = msgspec.msgpack.Decoder().decode
    rows = []
    for name, body in (("32 replies", replies), ("32 requests", requests)):
        row = [name]
        for decode in decoders.values():
            call = functools.partial(decode, body)
            spent = min(timeit.repeat(call, number=2000, repeat=5))
            row.append(f"{spent / 2000 / IN_FLIGHT * 1e6:.2f}")
        rows.append(row)
    return [["frame", *(f"{n} µs/message" for n in decoders)], *rows]


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("client_path", __doc__)
    parser.add_argument("--rounds", type=int, help="rounds, variants alternating (default 18)")
    parser.add_argument("--seconds", type=float, help="each variant's window (default 0.7)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.3 s")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 18)
    seconds = args.seconds or (0.3 if args.quick else 0.7)
    figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for round_ in range(rounds):
        for variant in VARIANTS:
            figures[variant].append(asyncio.run(_measure(variant, seconds)))
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    best_floor = min(figures["floor"])
    rows = [
        [v, f"{min(f):.2f}", f"{statistics.median(f):.2f}", f"{min(f) / best_floor:.2f}x"]
        for v, f in figures.items()
    ]
    table = format_table(["client", "best µs/write", "median", "best / floor"], rows)
    loop_us, pid_us = _per_call("asyncio.get_running_loop()"), _per_call("os.getpid()")
    decode_header, *decode_rows = _decode_costs()
    body = (
        f"CPU time of the client's process per acknowledged write, {IN_FLIGHT} writes in "
        f"flight, {rounds} rounds of {seconds} s, variants alternating (see `--help` for "
        "what each is). A stand-in writer answers every flush on the next loop turn; its "
        "decode and encode are counted in every row.\n\n"
        f"```\n{table}\n```\n\n"
        f"`asyncio.get_running_loop()` inside a running loop: {loop_us:.2f} µs a call "
        f"(`os.getpid()`: {pid_us:.2f} µs; Python {sys.version_info.major}."
        f"{sys.version_info.minor} checks the pid on every call).\n\n"
        "Decoding one frame, best of 5 x 2,000:\n\n"
        f"```\n{format_table(decode_header, decode_rows)}\n```\n"
    )
    print(body)
    if not args.no_write:
        command = " ".join(["python -m benchmarks.client_path", *(argv or sys.argv[1:])])
        _report.update_section(
            "client-path", "The asyncio client's own CPU per write", command.strip(), body
        )


if __name__ == "__main__":
    main()
