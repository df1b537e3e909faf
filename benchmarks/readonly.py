"""What the readers' authorizer costs per read.

SQLite asks the authorizer about each action while it prepares a statement, so a read
whose statement is in the connection's cache pays nothing, and one that is prepared
afresh pays a few Python calls. Two reader connections of one database, one with the
authorizer and one without, run the same reads in alternating rounds:

- ``cached``: one statement text, different parameters (the common case);
- ``prepared``: a different text each time (a comment varies), so every read prepares;
- ``prepared, json_each``: the same with an eponymous virtual table, whose declaration
  asks the authorizer about a dozen actions.

    python -m benchmarks.readonly            # 60 rounds of 2,000 reads per workload
    python -m benchmarks.readonly --quick    # 10 rounds of 1,000
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from onewriter import Config
from onewriter.sqlite.connect import open_connection

from . import _cli, _report

SCHEMA = "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)"
FILL = "INSERT INTO posts (title) SELECT 'post ' || value FROM json_each(?)"
ROWS = 1000
CACHED = "SELECT id, title FROM posts WHERE id = ?"
PREPARED = "SELECT id, title FROM posts WHERE id = ? -- {}"
VTAB = "SELECT count(*) FROM json_each(?) -- {}"

Read = Callable[[sqlite3.Connection, int], object]


def _cached(conn: sqlite3.Connection, i: int) -> object:
    return conn.execute(CACHED, (i % ROWS + 1,)).fetchall()


def _prepared(conn: sqlite3.Connection, i: int) -> object:
    return conn.execute(PREPARED.format(i), (i % ROWS + 1,)).fetchall()


def _vtab(conn: sqlite3.Connection, i: int) -> object:
    return conn.execute(VTAB.format(i), ("[1, 2, 3]",)).fetchall()


WORKLOADS: list[tuple[str, Read]] = [
    ("cached", _cached),
    ("prepared", _prepared),
    ("prepared, json_each", _vtab),
]


def per_read_us(conn: sqlite3.Connection, read: Read, n: int, offset: int) -> float:
    started = time.perf_counter()
    for i in range(offset, offset + n):
        read(conn, i)
    return 1e6 * (time.perf_counter() - started) / n


def run(rounds: int, reads: int) -> str:
    directory = Path(tempfile.mkdtemp(prefix="ow-readonly-"))
    try:
        path = str(directory / "bench.db")
        config = Config()
        writer = open_connection(path, config, "writer")
        writer.execute(SCHEMA)
        writer.execute(FILL, (str(list(range(ROWS))),))
        writer.close()
        guarded = open_connection(path, config, "reader")
        bare = open_connection(path, config, "reader")
        bare.set_authorizer(None)
        lines = [
            "| workload | without authorizer | with authorizer | difference | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        offset = 0
        for name, read in WORKLOADS:
            without: list[float] = []
            with_guard: list[float] = []
            for n in range(rounds):  # short rounds in alternating order: drift hits both
                pair = [(bare, without), (guarded, with_guard)]
                for conn, figures in pair if n % 2 else reversed(pair):
                    figures.append(per_read_us(conn, read, reads, offset))
                offset += reads
            a, b = statistics.median(without), statistics.median(with_guard)
            lines.append(f"| {name} | {a:.2f} µs | {b:.2f} µs | {b - a:+.2f} µs | {b / a:.2f}x |")
        guarded.close()
        bare.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    notes = (
        f"Median of {rounds} rounds of {reads:,} reads each, the two connections in "
        "alternating order, one thread, "
        "per read (execute and fetchall). The statement cache (512 statements per "
        "connection) keeps the authorizer off repeated reads; it runs only when a "
        "statement is prepared."
    )
    return "\n".join(lines) + "\n\n" + notes


def main() -> None:
    parser = _cli.parser("readonly", __doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    rounds, reads = (10, 1_000) if args.quick else (60, 2_000)
    body = run(rounds, reads)
    print(body)
    command = "python -m benchmarks.readonly" + (" --quick" if args.quick else "")
    if not args.no_write:
        _report.update_section("readonly", "What the readers' authorizer costs", command, body)


if __name__ == "__main__":
    main()
