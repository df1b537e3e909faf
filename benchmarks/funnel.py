"""The funnel at its floor: onewriter's pipelined writes beside a bare group-commit writer.

Every cell starts its writer on a fresh database in a fresh temp directory, then client
processes (spawn) that connect, send one warm-up write, meet at a barrier and keep
``--in-flight`` single-row INSERTs in flight each for ``--seconds``. writes/s counts
acknowledged writes from the first client's start to the last one's end. Afterwards the
cell counts the table's rows: every acknowledged write (and each warm-up) must be there.

Cells (same table, same row, WAL, ``synchronous=NORMAL`` everywhere):

  floor    a bare asyncio writer (``_funnel_floor.py``): msgpack frames over a Unix
           socket, each loop turn's requests in one BEGIN IMMEDIATE..COMMIT
  funnel   ``onewriter serve``; clients ``connect_async(db, role="client", writes="funnel")``
  uvloop   the same with ``--writer-loop uvloop`` (the ``speed`` extra)
  tcp      ``onewriter serve --listen tcp://127.0.0.1:0``; clients ``connect_async("tcp://...")``
  redis-floor  the bare writer taking from a Redis list (``_funnel_floor.py``), the
           floor for ``redis``
  redis    ``onewriter serve --redis ...`` through a throwaway redis-server
  own      one process with ``role="writer"`` that funnels its own asyncio writes
  other    ``onewriter serve`` and one client process (compare with ``own``)

    python -m benchmarks.funnel                # 3 rounds, 3 s a cell (~110 s)
    python -m benchmarks.funnel --quick        # 1 round, 0.5 s a cell
    python -m benchmarks.funnel --profile      # floor and funnel under py-spy: where the
                                               # microseconds go (docs/funnel_profile.md)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import onewriter

from . import _cli, _report
from . import _funnel_floor as floor
from ._processes import serve_onewriter, start_redis, stop
from ._writes_workloads import PAYLOAD, naive_connection

TOKEN = "funnel-benchmark-token"
START_TIMEOUT = 60.0
INSERT = "INSERT INTO items(process, payload) VALUES (?, ?)"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items ("
    "id INTEGER PRIMARY KEY, process INTEGER NOT NULL, payload TEXT NOT NULL)"
)
MIGRATIONS = [SCHEMA]


@dataclass(frozen=True)
class Way:
    key: str
    label: str
    many_clients: bool  # --clients client processes, or just one

    def clients(self, n: int) -> int:
        return n if self.many_clients else 1


WAYS = {
    w.key: w
    for w in [
        Way("floor", "a. floor: bare asyncio writer, Unix socket", True),
        Way("funnel", "b. onewriter funnel, Unix socket", True),
        Way("uvloop", "b. the same, writer on uvloop (the speed extra)", True),
        Way("tcp", "c. onewriter over TCP", True),
        Way("redis-floor", "d. floor: bare asyncio writer over Redis", True),
        Way("redis", "d. onewriter over Redis", True),
        Way("own", "e. asyncio in the writer's own process", False),
        Way("other", "e. asyncio from another process", False),
    ]
}


@dataclass
class Cell:
    way: Way
    round: int
    clients: int
    acked: int = 0
    warmups: int = 0
    seconds: float = 0.0
    stored: int = -1
    batch_p50: float | None = None
    errors: list[str] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)  # CPU seconds per client, window
    writer_cpu: float | None = None  # CPU seconds of the writer process, window

    @property
    def per_second(self) -> float:
        return self.acked / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.acked + self.warmups - self.stored

    @property
    def ok(self) -> bool:
        return not self.errors and self.lost == 0


# -- clients (spawned processes) ----------------------------------------------------------


async def run_lanes(write: Callable[[], Awaitable[Any]], in_flight: int, seconds: float) -> int:
    """``in_flight`` lanes, each awaiting one write after another for ``seconds``; how
    many writes were acknowledged."""
    stop_at = time.monotonic() + seconds
    acked = 0

    async def lane() -> None:
        nonlocal acked
        while time.monotonic() < stop_at:
            await write()
            acked += 1

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return acked


async def _drive(
    write: Callable[[], Awaitable[Any]], in_flight: int, seconds: float, barrier: Barrier
) -> dict[str, Any]:
    """One warm-up write, the barrier, then ``in_flight`` lanes until the deadline."""
    await write()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, barrier.wait, START_TIMEOUT)
    cpu, start = time.process_time(), time.time()
    acked = await run_lanes(write, in_flight, seconds)
    return {"start": start, "end": time.time(), "acked": acked, "cpu": time.process_time() - cpu}


async def _client(
    key: str,
    address: str,
    options: dict[str, Any],
    index: int,
    in_flight: int,
    seconds: float,
    barrier: Barrier,
) -> dict[str, Any]:
    params = [index, PAYLOAD]
    if key == "floor":
        bare = await floor.connect(address)
        try:
            return await _drive(lambda: bare.call(INSERT, params), in_flight, seconds, barrier)
        finally:
            bare.transport.close()
    if key == "redis-floor":
        through = await floor.connect_redis(address, options["queue"], index)
        try:
            return await _drive(lambda: through.call(INSERT, params), in_flight, seconds, barrier)
        finally:
            through.pushes.transport.close()
            through.reads.transport.close()
    async with onewriter.connect_async(address, **options) as db:
        result = await _drive(lambda: db.execute_write(INSERT, params), in_flight, seconds, barrier)
        if key == "own":  # the writer lives here: nobody else can ask it
            result["batch_p50"] = float((await db.stats())["batch_size"]["p50"])
        return result


def client(
    key: str,
    address: str,
    options: dict[str, Any],
    index: int,
    in_flight: int,
    seconds: float,
    barrier: Barrier,
    pipe: Connection,
) -> None:
    """Process entry: run the client, send what it measured (or its error) on ``pipe``."""
    logging.getLogger("onewriter").setLevel(logging.ERROR)  # the SQLite version warning
    try:
        pipe.send(asyncio.run(_client(key, address, options, index, in_flight, seconds, barrier)))
    except BaseException as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


# -- writers ---------------------------------------------------------------------------------


def start_serve(
    database: str, key: str, directory: str, redis_url: str | None
) -> tuple[subprocess.Popen[str], str, dict[str, Any]]:
    """``onewriter serve`` for cell ``key``: the process, the clients' address and options."""
    flags = ["--migrations", "benchmarks.funnel:MIGRATIONS", "--max-pending", "4000"]
    queue = f"funnel-{os.path.basename(directory)}"
    flags += ["--writer-loop", "uvloop" if key == "uvloop" else "asyncio"]
    if key == "tcp":
        token_file = os.path.join(directory, "token")
        Path(token_file).write_text(TOKEN)
        flags += ["--listen", "tcp://127.0.0.1:0", "--token-file", token_file, "--allow-sql"]
    elif key == "redis":
        assert redis_url is not None
        flags += ["--redis", redis_url, "--redis-queue", queue, "--allow-sql"]
    proc, words = serve_onewriter(database, flags, directory)
    if key == "tcp":
        return proc, words["listen"], {"token": TOKEN}
    if key == "redis":
        assert redis_url is not None
        return proc, redis_url, {"queue": queue}
    return proc, database, {"role": "client", "writes": "funnel"}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one cell -------------------------------------------------------------------------------


@dataclass
class Probe:
    """What a profiling run attaches once the clients are released: called with the
    writer's pid and the client processes' pids."""

    attach: Callable[[int, list[int]], Any]
    detach: Callable[[Any], None]


def run_cell(
    way: Way,
    round_: int,
    n_clients: int,
    in_flight: int,
    seconds: float,
    scratch: str,
    redis_url: str | None,
    probe: Probe | None = None,
) -> Cell:
    ctx = multiprocessing.get_context("spawn")
    directory = tempfile.mkdtemp(prefix=f"{way.key}-", dir=scratch)
    database = os.path.join(directory, "bench.db")
    cell = Cell(way, round_, way.clients(n_clients))
    bare: tuple[multiprocessing.process.BaseProcess, Connection] | None = None
    serve: subprocess.Popen[str] | None = None
    writer_pid = 0
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        if way.key in ("floor", "redis-floor"):
            conn = naive_connection(database, "normal", explicit_transactions=True)
            conn.execute(SCHEMA)
            conn.close()
            ours, theirs = ctx.Pipe()
            if way.key == "floor":
                address, options = os.path.join(directory, "floor.sock"), {}
                writer = ctx.Process(target=floor.serve, args=(database, address, theirs))
            else:
                assert redis_url is not None
                url = urlsplit(redis_url)
                address = f"{url.hostname}:{url.port}"
                options = {"queue": f"funnel-{os.path.basename(directory)}"}
                writer = ctx.Process(
                    target=floor.serve_redis, args=(database, address, options["queue"], theirs)
                )
            writer.start()
            bare, writer_pid = (writer, ours), writer.pid or 0
            if not ours.poll(START_TIMEOUT) or ours.recv() != "ready":
                raise RuntimeError("the bare writer did not start")
        elif way.key == "own":
            address = database
            options = {"role": "writer", "writes": "funnel", "migrations": MIGRATIONS}
        else:
            serve, address, options = start_serve(database, way.key, directory, redis_url)
            writer_pid = serve.pid
        barrier = ctx.Barrier(cell.clients + 1)
        pipes = []
        for index in range(cell.clients):
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=client,
                args=(way.key, address, options, index, in_flight, seconds, barrier, theirs),
            )
            proc.start()
            theirs.close()
            pipes.append(ours)
            procs.append(proc)
        if way.key == "own":
            writer_pid = procs[0].pid or 0
        barrier.wait(START_TIMEOUT)
        writer_cpu = process_cpu(writer_pid)
        attached = probe.attach(writer_pid, [p.pid or 0 for p in procs]) if probe else None
        results: list[dict[str, Any]] = [
            p.recv() if p.poll(seconds + START_TIMEOUT) else {"error": "no result"} for p in pipes
        ]
        cell.writer_cpu = process_cpu(writer_pid) - writer_cpu if way.key != "own" else None
        if probe is not None:
            probe.detach(attached)
        for started in procs:
            started.join(30)
        cell.errors = [r["error"] for r in results if "error" in r]
        timed = [r for r in results if "error" not in r]
        cell.warmups = len(timed)
        cell.acked = sum(r["acked"] for r in timed)
        cell.client_cpu = [r["cpu"] for r in timed]
        if timed:
            cell.seconds = max(r["end"] for r in timed) - min(r["start"] for r in timed)
        if way.key == "own" and timed:
            cell.batch_p50 = timed[0]["batch_p50"]
        if serve is not None:
            with onewriter.connect(database, role="client") as db:
                cell.batch_p50 = float(db.stats()["batch_size"]["p50"])
    finally:
        for started in procs:
            if started.is_alive():
                started.kill()
                started.join()
        if serve is not None:
            stop(serve)
        if bare is not None:
            bare_writer, control = bare
            try:
                control.send("stop")
                if control.poll(20):
                    cell.batch_p50 = float(control.recv()["batch_p50"])
            finally:
                bare_writer.join(20)
                if bare_writer.is_alive():
                    bare_writer.kill()
                    bare_writer.join()
    conn = sqlite3.connect(database)
    try:
        cell.stored = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    finally:
        conn.close()
    shutil.rmtree(directory, ignore_errors=True)
    return cell


# -- the report --------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns: the first left, the others right."""
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def _ratio(cells: Sequence[Cell], key: str, base: str) -> dict[int, float]:
    """Per round: writes/s of ``key`` over writes/s of ``base``."""
    out = {}
    for c in cells:
        if c.way.key == key:
            for b in cells:
                if b.way.key == base and b.round == c.round and b.per_second:
                    out[c.round] = c.per_second / b.per_second
    return out


def render(cells: Sequence[Cell], in_flight: int, skipped: Sequence[str]) -> str:
    headers = ["cell", "round", "clients", "in flight", "writes/s", "vs floor", "batch p50"]
    headers += ["acked", "stored", "lost", "client CPU µs/write", "writer CPU µs/write"]
    rows = []
    for c in sorted(cells, key=lambda c: (list(WAYS).index(c.way.key), c.round)):
        base = next((b for b in cells if b.way.key == "floor" and b.round == c.round), None)
        vs = f"{c.per_second / base.per_second:.2f}x" if base and base.per_second else "-"
        if c.way.key not in ("floor", "funnel", "uvloop", "tcp", "redis-floor", "redis"):
            vs = "-"  # different client count
        client_us = sum(c.client_cpu) / c.acked * 1e6 if c.acked else 0.0
        writer_us = c.writer_cpu / c.acked * 1e6 if c.acked and c.writer_cpu is not None else None
        rows.append(
            [
                c.way.label,
                str(c.round),
                str(c.clients),
                str(in_flight),
                f"{c.per_second:,.0f}",
                vs,
                "-" if c.batch_p50 is None else f"{c.batch_p50:.0f}",
                f"{c.acked + c.warmups:,}",
                f"{c.stored:,}",
                f"{c.lost:,}" if not c.errors else "ERROR",
                f"{client_us:.1f}",
                "-" if writer_us is None else f"{writer_us:.1f}",
            ]
        )
    out = ["```\n" + format_table(headers, rows) + "\n```\n"]
    funnel = _ratio(cells, "funnel", "floor")
    uvloop = _ratio(cells, "uvloop", "funnel")
    own = _ratio(cells, "own", "other")
    redis = _ratio(cells, "redis", "redis-floor")
    summary = []
    if funnel:
        each = ", ".join(f"{r:.2f}" for r in funnel.values())
        summary.append(
            f"b/a (onewriter funnel / bare floor), per round: {each}; "
            f"median {statistics.median(funnel.values()):.2f}"
        )
    if redis:
        each = ", ".join(f"{r:.2f}" for r in redis.values())
        summary.append(
            f"d (onewriter over Redis / bare writer over Redis), per round: {each}; "
            f"median {statistics.median(redis.values()):.2f}"
        )
    if uvloop:
        each = ", ".join(f"{r:.2f}" for r in uvloop.values())
        summary.append(
            f"uvloop on / off (writer's loop), per round: {each}; "
            f"median {statistics.median(uvloop.values()):.2f}"
        )
    if own:
        each = ", ".join(f"{r:.2f}" for r in own.values())
        summary.append(
            f"e: writer's own process / another process, per round: {each}; "
            f"median {statistics.median(own.values()):.2f}"
        )
    errors = [f"{c.way.label}, round {c.round}: {e}" for c in cells for e in c.errors]
    lost = [f"{c.way.label}, round {c.round}: {c.lost:,} rows missing" for c in cells if c.lost]
    everything = [*summary, *errors, *lost, *skipped]
    if everything:
        out.append("```\n" + "\n".join(everything) + "\n```\n")
    out.append("### How to read the table\n")
    out.append(NOTES.replace("\n", " ") + "\n")
    return "\n".join(out)


NOTES = """Every cell inserts the same single row (`INSERT INTO items(process, payload)`, a
100-byte payload) as raw SQL, one row per request, on a fresh database with WAL and
`synchronous=NORMAL` (the floor's connection gets onewriter's PRAGMAs, as the naive side of
`benchmarks.writes`). `writes/s`: acknowledged writes from the first client's start to the
last one's end. `vs floor`: writes/s over the floor's in the same round (only for cells
with the same number of clients). `stored` is the table's row count afterwards, `acked`
counts each client's warm-up write too, `lost` is acked - stored. `batch p50`: the writer's
median group-commit size (onewriter's `stats()`; the floor counts its own). `CPU µs/write`:
CPU time (user + system) spent over the window divided by the writes acknowledged in it;
the client figure adds up every client process, the writer's is its whole process (for `own`
client and writer are one process). The floor has no exactly-once records, deadlines,
intake checks, write turn or stats, and keeps SQLite's automatic checkpoint (onewriter's
writer runs its own PASSIVE checkpoints). The floor over Redis is the same writer taking
elements from a Redis list (a producer's flush is one element), with no processing list
and no MULTI: it pushes each producer's replies and asks for the next elements in one
write; `d` compares onewriter over Redis with it. Clients, writer and redis-server share
the machine's cores."""


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _cli.parser("funnel", __doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="each cell's window (default 3; 0.5 with --quick, 8 with --profile)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="repeat every cell (default 3; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="one short round, for a smoke run")
    parser.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    parser.add_argument("--in-flight", type=int, default=32, help="writes in flight per client")
    parser.add_argument(
        "--cells",
        default=",".join(WAYS),
        help=f"which cells, in this order each round (default {','.join(WAYS)})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: run floor and funnel once under py-spy and write docs/funnel_profile.md",
    )
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 8.0 if args.profile else 3.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in args.cells if c not in WAYS]
    if unknown:
        parser.error(f"unknown cells {', '.join(unknown)}; choose from {', '.join(WAYS)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.funnel", *(argv or sys.argv[1:])])
    if args.profile:
        from . import _funnel_profile

        _funnel_profile.main(args, command)
        return
    began = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="ow-funnel-bench-")
    over_redis = {"redis", "redis-floor"} & set(args.cells)
    redis = start_redis(scratch) if over_redis else None
    skipped = []
    if over_redis and redis is None:
        skipped.append("redis-server is not installed: the Redis cells were skipped")
    cells: list[Cell] = []
    plan = [
        (r, WAYS[k])
        for r in range(1, args.rounds + 1)
        for k in args.cells
        if k not in over_redis or redis is not None
    ]
    try:
        for i, (round_, way) in enumerate(plan, 1):
            cell_began = time.perf_counter()
            cell = run_cell(
                way,
                round_,
                args.clients,
                args.in_flight,
                args.seconds,
                scratch,
                redis[1] if redis else None,
            )
            cells.append(cell)
            status = "ok" if cell.ok else f"errors {cell.errors[:1]}, lost {cell.lost:,}"
            print(
                f"[{i}/{len(plan)}] round {round_} {way.label}: {cell.per_second:,.0f} writes/s, "
                f"batch p50 {cell.batch_p50}, {status} ({time.perf_counter() - cell_began:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if redis is not None:
            stop(redis[0])
        shutil.rmtree(scratch, ignore_errors=True)
    body = render(cells, args.in_flight, skipped)
    print(body)
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)
    if not args.no_write:
        _report.update_section(
            "funnel",
            "The funnel at its floor: pipelined writes beside a bare writer",
            command,
            body,
        )


if __name__ == "__main__":
    main()
