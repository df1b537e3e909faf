"""Producers on other machines: acknowledged rows/s over TCP and Redis, beside the Unix socket.

Each cell starts one ``onewriter serve`` process on a fresh database (with ``--listen`` and
a token, or ``--redis``), then N producer processes (spawn) that connect, meet at a
barrier and each write their rows, waiting for every acknowledgement. rows/s is all rows
over the time from the first producer's start to the last acknowledgement. Afterwards
the cell checks that the database holds every row exactly once.

    python -m benchmarks.remote            # 4 and 8 producers, the full row counts
    python -m benchmarks.remote --quick    # 4 and 8 producers, small row counts
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import onewriter
from onewriter.cli.tables import format_table

from . import _cli, _report
from ._processes import serve_onewriter, start_redis, stop
from ._writes_cells import spawn_context

TOKEN = "benchmark-token"
PAYLOAD = "x" * 40
START_TIMEOUT = 60.0

ops = onewriter.Ops()
MIGRATIONS = [
    "CREATE TABLE rows (producer INTEGER NOT NULL, n INTEGER NOT NULL, payload TEXT NOT NULL)"
]


@ops.register
def insert_rows(conn: sqlite3.Connection, producer: int, first: int, count: int) -> None:
    """Rows ``first`` to ``first + count - 1`` of ``producer`` (one request, count rows)."""
    conn.executemany(
        "INSERT INTO rows (producer, n, payload) VALUES (?, ?, ?)",
        [(producer, n, PAYLOAD) for n in range(first, first + count)],
    )


TARGETS = """Targets: the Redis path at least 100,000 acknowledged rows/s and the
TCP path at least 100,000 acknowledged rows/s pipelined, both more than twice the published
45K records/s (a Go Redis-list consumer in production), every row exactly once. Measured
here before any code: producers pipelining into a Redis list and one consumer popping 500
at a time, inserting them in one transaction, ~218,000 rows/s; one BRPOP per row ~3,100."""

NOTES = """`transport`: `unix` is the writer's own socket (the same host), `tcp` is
`connect("tcp://...", token=...)` on loopback, `redis` is `connect("redis://...",
queue=...)` through a redis-server on loopback. `in flight`: 1 is the sync client (one
request at a time per producer), a larger number is the asyncio client with that many
requests in flight per producer. `rows/req`: rows inserted by one request (one op call).
`req/s` and `rows/s` count acknowledged requests and rows from the first producer's start
to the last acknowledgement. `batch p50`: the writer's median group-commit size.
`exactly once`: the table holds every row once, none missing, none twice. The writer, the
producers and redis-server share the machine's cores."""


@dataclass(frozen=True)
class Way:
    transport: str  # "unix" | "tcp" | "redis"
    in_flight: int  # 1: the sync client; more: the asyncio client, this many per producer
    rows_per_request: int = 1

    @property
    def label(self) -> str:
        return f"{self.transport}, {self.in_flight} in flight, {self.rows_per_request} rows/req"


WAYS = [
    Way("unix", 1),
    Way("unix", 64),
    Way("tcp", 1),
    Way("tcp", 64),
    Way("redis", 1),
    Way("redis", 64),
    Way("tcp", 64, 10),
    Way("redis", 64, 10),
]


@dataclass
class Cell:
    way: Way
    producers: int
    requests: int
    seconds: float
    stored: int
    distinct: int
    batch_p50: float
    errors: list[str]

    @property
    def rows(self) -> int:
        return self.requests * self.way.rows_per_request

    @property
    def exactly_once(self) -> bool:
        return not self.errors and self.stored == self.distinct == self.rows


# -- producers (spawned processes) --------------------------------------------------------------


def _target(way: Way, address: str, queue: str) -> tuple[str, dict[str, Any]]:
    if way.transport == "unix":
        return address, {"role": "client"}
    if way.transport == "tcp":
        return address, {"token": TOKEN}
    return address, {"queue": queue}


def produce(
    way: Way,
    address: str,
    queue: str,
    producer: int,
    requests: int,
    barrier: Barrier,
    pipe: Connection,
) -> None:
    """Connect, wait at the barrier, send ``requests`` requests, report start and end."""
    target, options = _target(way, address, queue)
    try:
        if way.in_flight == 1:
            pipe.send(_one_in_flight(way, target, options, producer, requests, barrier))
        else:
            pipe.send(asyncio.run(_pipelined(way, target, options, producer, requests, barrier)))
    except BaseException as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _one_in_flight(
    way: Way, target: str, options: dict[str, Any], producer: int, requests: int, barrier: Barrier
) -> dict[str, float]:
    per = way.rows_per_request
    with onewriter.connect(target, **options) as db:
        barrier.wait(START_TIMEOUT)
        start = time.time()
        for r in range(requests):
            db.write(insert_rows, producer=producer, first=r * per, count=per)
        return {"start": start, "end": time.time()}


async def _pipelined(
    way: Way, target: str, options: dict[str, Any], producer: int, requests: int, barrier: Barrier
) -> dict[str, float]:
    per = way.rows_per_request
    async with onewriter.connect_async(target, **options) as db:

        async def lane(k: int) -> None:
            for r in range(k, requests, way.in_flight):
                await db.write(insert_rows, producer=producer, first=r * per, count=per)

        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, START_TIMEOUT)
        start = time.time()
        await asyncio.gather(*(lane(k) for k in range(way.in_flight)))
        return {"start": start, "end": time.time()}


# -- the writer and redis-server ----------------------------------------------------------------


def start_writer(
    database: str, way: Way, redis_url: str | None, queue: str, token_file: str
) -> tuple[subprocess.Popen[str], str]:
    """``onewriter serve`` for ``way``; returns the process and the producers' address."""
    flags = ["--ops", "benchmarks.remote:ops", "--migrations", "benchmarks.remote:MIGRATIONS"]
    flags += ["--max-pending", "2000"]
    if way.transport == "tcp":
        flags += ["--listen", "tcp://127.0.0.1:0", "--token-file", token_file]
    if way.transport == "redis":
        assert redis_url is not None
        flags += ["--redis", redis_url, "--redis-queue", queue]
    proc, words = serve_onewriter(database, flags, os.path.dirname(token_file))
    address = {"unix": database, "tcp": words.get("listen"), "redis": redis_url}[way.transport]
    assert address is not None
    return proc, address


# -- cells ----------------------------------------------------------------------------------------


def run_cell(way: Way, producers: int, requests: int, redis_url: str | None, scratch: str) -> Cell:
    directory = tempfile.mkdtemp(prefix="cell-", dir=scratch)
    database = os.path.join(directory, "bench.db")
    token_file = os.path.join(directory, "token")
    Path(token_file).write_text(TOKEN)
    queue = f"bench-{os.path.basename(directory)}"
    writer, address = start_writer(database, way, redis_url, queue, token_file)
    ctx = spawn_context()
    try:
        barrier = ctx.Barrier(producers)
        pipes, procs = [], []
        for p in range(producers):
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=produce, args=(way, address, queue, p, requests, barrier, theirs)
            )
            proc.start()
            theirs.close()
            pipes.append(ours)
            procs.append(proc)
        results = [
            pipe.recv() if pipe.poll(START_TIMEOUT * 5) else {"error": "no result"}
            for pipe in pipes
        ]
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        with onewriter.connect(database, role="client") as db:
            stats = db.stats()
    finally:
        stop(writer)
    conn = sqlite3.connect(database)
    try:
        stored, distinct = conn.execute(
            "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT producer, n FROM rows))"
            " FROM rows"
        ).fetchone()
    finally:
        conn.close()
    shutil.rmtree(directory, ignore_errors=True)
    errors = [r["error"] for r in results if "error" in r]
    timed = [r for r in results if "error" not in r]
    seconds = max(r["end"] for r in timed) - min(r["start"] for r in timed) if timed else 0.0
    return Cell(
        way=way,
        producers=producers,
        requests=requests * producers,
        seconds=seconds,
        stored=stored,
        distinct=distinct,
        batch_p50=float(stats["batch_size"]["p50"]),
        errors=errors,
    )


def requests_for(way: Way, quick: bool) -> int:
    """Requests per producer: enough for a second or more of work (less with --quick)."""
    if way.in_flight == 1:
        return 600 if quick else 5_000
    return (4_000 if quick else 30_000) // way.rows_per_request


def _against_targets(cells: Sequence[Cell]) -> str:
    """The best pipelined rows/s of each remote transport, per rows/req, beside 100,000."""
    lines = []
    for transport in ("tcp", "redis"):
        for per in sorted({c.way.rows_per_request for c in cells}):
            runs = [
                c
                for c in cells
                if c.way.transport == transport
                and c.way.in_flight > 1
                and c.way.rows_per_request == per
                and c.seconds
            ]
            if runs:
                best = max(runs, key=lambda c: c.rows / c.seconds)
                rate = best.rows / best.seconds
                lines.append(
                    f"{transport}, pipelined, {per} rows/req: best {rate:,.0f} rows/s "
                    f"(N={best.producers}), {'meets' if rate >= 100_000 else 'below'} the "
                    f"100,000 target, exactly once: {'yes' if best.exactly_once else 'NO'}"
                )
    return "```\n" + "\n".join(lines) + "\n```\n" if lines else ""


def render(cells: Sequence[Cell], skipped: Sequence[str]) -> str:
    rows = [
        [
            c.way.transport,
            c.way.in_flight,
            c.way.rows_per_request,
            c.producers,
            f"{c.rows:,}",
            f"{c.requests / c.seconds:,.0f}" if c.seconds else "-",
            f"{c.rows / c.seconds:,.0f}" if c.seconds else "-",
            f"{c.batch_p50:.0f}",
            "yes" if c.exactly_once else f"NO ({c.stored:,} stored, {c.distinct:,} distinct)",
        ]
        for c in cells
    ]
    header = [
        "transport",
        "in flight",
        "rows/req",
        "producers",
        "rows",
        "req/s",
        "rows/s",
        "batch p50",
        "exactly once",
    ]
    out = ["```\n" + format_table(header, rows) + "\n```\n"]
    errors = [f"{c.way.label}, N={c.producers}: {e}" for c in cells for e in c.errors]
    if errors or skipped:
        out.append("```\n" + "\n".join([*errors, *skipped]) + "\n```\n")
    out.append("### Targets\n")
    out.append(TARGETS.replace("\n", " ") + "\n")
    out.append(_against_targets(cells))
    out.append("### How to read the table\n")
    out.append(NOTES.replace("\n", " ") + "\n")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _cli.parser("remote", __doc__)
    parser.add_argument("--quick", action="store_true", help="small row counts, for a smoke run")
    parser.add_argument("--producers", default="4,8", help="producer process counts (default 4,8)")
    parser.add_argument(
        "--transports", default="unix,tcp,redis", help="which to run (default unix,tcp,redis)"
    )
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.producers.split(",") if n.strip()]
    transports = {t.strip() for t in args.transports.split(",")}
    began = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="ow-remote-bench-")
    redis = start_redis(scratch)
    skipped = [] if redis else ["redis-server is not installed: the Redis cells were skipped"]
    cells = []
    try:
        for way in WAYS:
            if way.transport not in transports or (way.transport == "redis" and redis is None):
                continue
            for n in counts:
                cell_began = time.perf_counter()
                cell = run_cell(
                    way, n, requests_for(way, args.quick), redis[1] if redis else None, scratch
                )
                cells.append(cell)
                print(
                    f"{way.label}, N={n}: {cell.rows / max(cell.seconds, 1e-9):,.0f} rows/s, "
                    f"exactly once: {cell.exactly_once} ({time.perf_counter() - cell_began:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if redis is not None:
            stop(redis[0])
        shutil.rmtree(scratch, ignore_errors=True)
    body = render(cells, skipped)
    print(body)
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)
    command = shlex.join(["python", "-m", "benchmarks.remote", *(argv or sys.argv[1:])])
    if not args.no_write:
        _report.update_section(
            "remote", "Producers on other machines: TCP and Redis", command, body
        )


if __name__ == "__main__":
    main()
