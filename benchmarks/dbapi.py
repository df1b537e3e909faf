"""sqlite3-style code from many processes: the standard module against onewriter.dbapi.

The same web-ish workload runs in N processes (spawn) on a fresh database, released
together at a barrier: 80 % reads (one row by id), 20 % short write transactions. The
only difference between runs of one style is the import: ``sqlite3`` with WAL and
``busy_timeout`` 5 s, or ``onewriter.dbapi`` (its connections are the standard
module's; write transactions take the write turn). Transaction styles:

- ``implicit``: UPDATE and INSERT in the transaction the module opens before DML, commit.
- ``autocommit``: the same statements with ``isolation_level = None``: each commits alone.
- ``read-write``: BEGIN, SELECT a value, UPDATE it to value + 1, INSERT, COMMIT.
- ``read-only-tx``: as ``implicit``, but each read is ``BEGIN``, the SELECT, ``COMMIT``
  (what an explicit BEGIN costs a transaction that only reads: it takes the turn).

    python -m benchmarks.dbapi             # 8 processes, 10 s a run
    python -m benchmarks.dbapi --quick     # 8 processes, 2 s a run
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import random
import shlex
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from . import _cli, _report

RUNS = (
    ("sqlite3", "implicit"),
    ("onewriter.dbapi", "implicit"),
    ("sqlite3", "autocommit"),
    ("onewriter.dbapi", "autocommit"),
    ("sqlite3", "read-write"),
    ("onewriter.dbapi", "read-write"),
    ("sqlite3", "read-only-tx"),
    ("onewriter.dbapi", "read-only-tx"),
)
READ_SHARE = 0.8
ITEMS = 1000
BARRIER_TIMEOUT = 60.0
SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, views INTEGER NOT NULL);
CREATE TABLE visits (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, at REAL NOT NULL);
"""

NOTES = """Each process runs the same loop with `import sqlite3` or `import onewriter.dbapi
as sqlite3`: a read is `SELECT ... WHERE id = ?` (one row); a write is `UPDATE items` and
`INSERT INTO visits`, in the transaction style of the row (see the module docstring). The
standard module runs in WAL with `synchronous=NORMAL` and a 5 s busy timeout;
onewriter.dbapi at its defaults (also NORMAL). ops/s counts reads and committed write
transactions over the common window; latencies are per read and per whole write
transaction (its statements and the commit). `locked` counts errors saying the database
(or a table) is locked; `stored` is the visits rows afterwards, which must equal the
committed transactions, and `lost` the committed transactions whose `views + 1` is
missing from the items afterwards (a lost update). onewriter's write transactions take
the write turn at their first write (at `BEGIN` when explicit), one at a time across
the processes; reads outside a transaction run at once on each process's own
connection."""


@dataclass
class Result:
    """What one module's run measured, merged over its processes."""

    module: str
    style: str
    processes: int
    reads: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    window: float = 0.0
    stored: int = 0
    views: int = 0

    @property
    def lost(self) -> int:
        return max(0, len(self.writes) - self.views)

    @property
    def locked(self) -> int:
        return sum(n for message, n in self.errors.items() if "locked" in message)

    def per_second(self, samples: Sequence[float]) -> float:
        return len(samples) / self.window if self.window else 0.0


def percentile(samples: Sequence[float], q: float) -> float:
    if not samples:
        return 0.0
    data = sorted(samples)
    return data[min(len(data) - 1, int(q * (len(data) - 1) + 0.5))]


def prepare(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.executemany(
        "INSERT INTO items (id, name, views) VALUES (?, ?, 0)",
        [(i, f"item {i}") for i in range(1, ITEMS + 1)],
    )
    conn.commit()
    conn.close()


def open_connection(module_name: str, path: str) -> Any:
    module = importlib.import_module(module_name)
    if module_name == "sqlite3":
        conn = module.connect(path, timeout=5.0)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn
    return module.connect(path)


def write_transaction(conn: Any, style: str, item: int) -> None:
    if style == "read-write":
        conn.execute("BEGIN")
        (views,) = conn.execute("SELECT views FROM items WHERE id = ?", (item,)).fetchone()
        conn.execute("UPDATE items SET views = ? WHERE id = ?", (views + 1, item))
    else:
        conn.execute("UPDATE items SET views = views + 1 WHERE id = ?", (item,))
    conn.execute("INSERT INTO visits (item, at) VALUES (?, ?)", (item, time.time()))
    conn.commit()


def read(conn: Any, style: str, item: int) -> None:
    if style == "read-only-tx":
        conn.execute("BEGIN")
    conn.execute("SELECT id, name, views FROM items WHERE id = ?", (item,)).fetchone()
    if style == "read-only-tx":
        conn.commit()


def worker(
    module_name: str,
    style: str,
    path: str,
    seconds: float,
    barrier: Any,
    out: Connection,
    seed: int,
) -> None:
    """One process: connect, wait for the others, run the mix until the deadline."""
    rng = random.Random(seed)
    conn = open_connection(module_name, path)
    if style == "autocommit":
        conn.isolation_level = None
    conn.execute("SELECT count(*) FROM items").fetchone()  # connected (and elected)
    barrier.wait(BARRIER_TIMEOUT)
    started = time.perf_counter()
    deadline = started + seconds
    reads: list[float] = []
    writes: list[float] = []
    errors: Counter[str] = Counter()
    clock = time.perf_counter
    while True:
        began = clock()
        if began >= deadline:
            break
        item = rng.randint(1, ITEMS)
        try:
            if rng.random() < READ_SHARE:
                read(conn, style, item)
                reads.append(clock() - began)
            else:
                write_transaction(conn, style, item)
                writes.append(clock() - began)
        except sqlite3.Error as exc:  # onewriter.dbapi's errors are subclasses
            errors[f"{type(exc).__name__}: {exc}"] += 1
            try:
                if conn.in_transaction:
                    conn.rollback()
            except sqlite3.Error as again:
                errors[f"rollback {type(again).__name__}: {again}"] += 1
    ended = clock()
    conn.close()
    out.send((started, ended, reads, writes, dict(errors)))
    out.close()


def run(module_name: str, style: str, processes: int, seconds: float) -> Result:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-dbapi-") as directory:
        path = os.path.join(directory, "app.db")
        prepare(path)
        barrier = ctx.Barrier(processes)
        pipes = []
        procs = []
        for n in range(processes):
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=worker,
                args=(module_name, style, path, seconds, barrier, sender, n),
                daemon=True,
            )
            proc.start()
            sender.close()
            pipes.append(receiver)
            procs.append(proc)
        result = Result(module_name, style, processes)
        starts: list[float] = []
        ends: list[float] = []
        for receiver, proc in zip(pipes, procs, strict=True):
            if not receiver.poll(seconds + BARRIER_TIMEOUT + 60):
                proc.kill()
                raise RuntimeError(f"a {module_name} worker did not report")
            started, ended, reads, writes, errors = receiver.recv()
            starts.append(started)
            ends.append(ended)
            result.reads += reads
            result.writes += writes
            result.errors.update(errors)
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        result.window = max(ends) - min(starts)
        conn = sqlite3.connect(path, timeout=30)
        result.stored = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
        result.views = conn.execute("SELECT sum(views) FROM items").fetchone()[0]
        conn.close()
    return result


def table(results: Sequence[Result]) -> str:
    header = (
        f"{'module':<16} {'transactions':<12} {'N':>2} {'ops/s':>8} {'reads/s':>8} {'tx/s':>7} "
        f"{'read p50':>9} {'read p99':>9} {'tx p50':>8} {'tx p99':>8} {'tx max':>8} "
        f"{'locked':>6} {'errors':>6} {'stored':>7} {'lost':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ms = 1000.0
        errors = sum(r.errors.values())
        lines.append(
            f"{r.module:<16} {r.style:<12} {r.processes:>2} "
            f"{r.per_second(r.reads) + r.per_second(r.writes):>8,.0f} "
            f"{r.per_second(r.reads):>8,.0f} {r.per_second(r.writes):>7,.0f} "
            f"{percentile(r.reads, 0.5) * ms:>7.2f}ms {percentile(r.reads, 0.99) * ms:>7.2f}ms "
            f"{percentile(r.writes, 0.5) * ms:>6.2f}ms {percentile(r.writes, 0.99) * ms:>6.1f}ms "
            f"{percentile(r.writes, 1.0) * ms:>6.0f}ms "
            f"{r.locked:>6,} {errors:>6,} {r.stored:>7,} {r.lost:>5,}"
        )
    return "\n".join(lines)


def ratios(results: Sequence[Result]) -> str:
    """onewriter.dbapi's committed write transactions (and reads) per second over the
    standard module's, style by style."""
    by_key = {(r.module, r.style): r for r in results}
    lines = []
    for module, style in RUNS:
        ours = by_key.get((module, style))
        stock = by_key.get(("sqlite3", style))
        if module == "sqlite3" or ours is None or stock is None:
            continue
        tx = ours.per_second(ours.writes) / max(stock.per_second(stock.writes), 1e-9)
        rd = ours.per_second(ours.reads) / max(stock.per_second(stock.reads), 1e-9)
        lines.append(f"{style:<12} committed tx/s {tx:5.2f}x   reads/s {rd:5.2f}x")
    return "\n".join(lines)


def render(results: Sequence[Result]) -> str:
    out = ["```", table(results), "```", ""]
    out += ["onewriter.dbapi over sqlite3:", "", "```", ratios(results), "```", ""]
    messages = [
        f"{r.module} {r.style}: {n:,} x {message[:160]}"
        for r in results
        for message, n in r.errors.most_common(8)
    ]
    out += ["### Errors by message", "", "```", "\n".join(messages) or "none", "```", ""]
    out += ["### How to read the table", "", NOTES.replace("\n", " ")]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _cli.parser("dbapi", __doc__)
    parser.add_argument("--quick", action="store_true", help="2 s per run, for a smoke run")
    parser.add_argument("--seconds", type=float, default=None, help="per run (default 10)")
    parser.add_argument("--processes", type=int, default=8, help="processes (default 8)")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 10.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = []
    for module_name, style in RUNS:
        began = time.perf_counter()
        result = run(module_name, style, args.processes, args.seconds)
        print(
            f"{module_name} {style}: {len(result.reads) + len(result.writes):,} ops, "
            f"{result.locked:,} locked, {sum(result.errors.values()):,} errors "
            f"({time.perf_counter() - began:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    body = render(results)
    print(body)
    command = shlex.join(["python", "-m", "benchmarks.dbapi", *(argv or sys.argv[1:])])
    if not args.no_write:
        _report.update_section("dbapi", "sqlite3-style code from many processes", command, body)


if __name__ == "__main__":
    main()
