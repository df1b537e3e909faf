"""Jobs end to end (enqueue + claim + complete): onewriter.jobs on SQLite and on
PostgreSQL against huey (SqliteHuey), litequeue and persist-queue (SQLiteAckQueue) in one
run on this machine, plus the HTTP stress harness's heavy configuration on each store
(and two service instances sharing one PostgreSQL). Writes the "jobs" section of
docs/benchmarks.md.

Each library runs in this process on a fresh database file, at its own defaults (the
synchronous level each uses is shown). The peers have no batch API; onewriter is shown
both batched and one job at a time. PostgreSQL is a throwaway server started for the run
(tests/pg_server.py: initdb in a temporary directory, a free port, fsync on), never the
machine's own; each run gets a fresh schema.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onewriter
from benchmarks._report import update_section
from onewriter.cli.tables import format_table
from onewriter.jobs import JobQueue, JobStore, jobs_ops
from onewriter.jobs.stress import PUBLISHED, StressOptions, stress

from . import _cli

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
#: The throwaway server keeps PostgreSQL's durable defaults; runs choose
#: synchronous_commit per session.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def _timed(jobs: int, run: Callable[[], int]) -> float:
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    assert done == jobs, f"{done} of {jobs} jobs done"
    return jobs / elapsed


def _cycle(queue: JobStore, jobs: int, batch: int) -> Callable[[], int]:
    """Enqueue ``jobs`` (in batches, or one by one), then claim and complete them all."""

    def run() -> int:
        for first in range(0, jobs, batch):
            queue.enqueue_many("bench", [{"n": first + i} for i in range(batch)])
        done = 0
        while True:
            claimed = queue.claim("bench", limit=batch)
            if not claimed:
                return done
            held = queue.complete_many([(j.id, j.token or "", j.id) for j in claimed])
            done += sum(held)

    def run_single() -> int:
        for n in range(jobs):
            queue.enqueue("bench", {"n": n})
        done = 0
        while claimed := queue.claim("bench"):
            queue.complete(claimed[0].id, claimed[0].token or "", claimed[0].id)
            done += 1
        return done

    return run if batch > 1 else run_single


def bench_onewriter(path: str, jobs: int, batch: int, durability: str) -> float:
    ops = onewriter.Ops()
    ops.include(jobs_ops)
    db = onewriter.connect(path, ops=ops, durability=durability)
    try:
        return _timed(jobs, _cycle(JobQueue(db), jobs, batch))
    finally:
        db.close()


def bench_postgres(url: str, jobs: int, batch: int) -> float:
    from onewriter.jobs import PgJobQueue

    with PgJobQueue(url) as queue:
        return _timed(jobs, _cycle(queue, jobs, batch))


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Any]:
    """A PostgreSQL server of the run's own (``None`` when it cannot start here)."""
    sys.path.insert(0, str(TESTS_DIR))
    try:
        from pg_server import UNAVAILABLE, PostgresServer
    finally:
        sys.path.remove(str(TESTS_DIR))
    if UNAVAILABLE is not None:
        print(f"  PostgreSQL skipped: {UNAVAILABLE}", flush=True)
        yield None
        return
    server = PostgresServer(DURABLE)
    try:
        yield server
    finally:
        server.stop()


def postgres_version(server: Any) -> str:
    import psycopg

    with psycopg.connect(server.url) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    return str(row[0]).split()[0] if row else "?"


def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def bench_huey(path: str, jobs: int) -> float:
    from huey import SqliteHuey

    huey = SqliteHuey(filename=path)

    @huey.task()
    def job(n: int) -> int:
        return n

    def run() -> int:
        for n in range(jobs):
            job(n)
        done = 0
        while (task := huey.dequeue()) is not None:
            huey.execute(task)
            done += 1
        return done

    return _timed(jobs, run)


def bench_litequeue(path: str, jobs: int) -> float:
    from litequeue import LiteQueue

    queue = LiteQueue(path)

    def run() -> int:
        for n in range(jobs):
            queue.put(str(n))
        done = 0
        while (message := queue.pop()) is not None:
            queue.done(message.message_id)
            done += 1
        return done

    try:
        return _timed(jobs, run)
    finally:
        queue.close()


def bench_persist_queue(path: str, jobs: int) -> float:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(path, auto_commit=True)

    def run() -> int:
        for n in range(jobs):
            queue.put({"n": n})
        done = 0
        while queue.qsize() > 0:
            item = queue.get(block=False)
            queue.ack(item)
            done += 1
        return done

    return _timed(jobs, run)


def library_table(jobs: int, scratch: str, postgres: Any) -> str:
    """Every queue on its own fresh database file (or PostgreSQL schema); the table of
    their rates."""

    def onewriter_batched(p: str) -> float:
        return bench_onewriter(p, jobs, 500, "normal")

    def onewriter_full(p: str) -> float:
        return bench_onewriter(p, jobs, 500, "full")

    def onewriter_single(p: str) -> float:
        return bench_onewriter(p, jobs, 1, "normal")

    runs: list[tuple[str, str, Callable[[str], float]]] = [
        ("onewriter.jobs, batches of 500", "NORMAL", onewriter_batched),
        ("onewriter.jobs, batches of 500", "FULL", onewriter_full),
        ("onewriter.jobs, one job at a time", "NORMAL", onewriter_single),
        ("huey SqliteHuey (enqueue, dequeue, execute)", "FULL", lambda p: bench_huey(p, jobs)),
        ("litequeue (put, pop, done)", "NORMAL", lambda p: bench_litequeue(p, jobs)),
        (
            "persist-queue SQLiteAckQueue (put, get, ack)",
            "FULL",
            lambda p: bench_persist_queue(p, jobs),
        ),
    ]
    if postgres is not None:

        def on_postgres(batch: int, commit: str) -> Callable[[str], float]:
            return lambda _: bench_postgres(
                postgres.fresh_url(synchronous_commit=commit), jobs, batch
            )

        batched, single = "on PostgreSQL, batches of 500", "on PostgreSQL, one job at a time"
        runs[3:3] = [
            (f"onewriter.jobs {batched}", "commit off", on_postgres(500, "off")),
            (f"onewriter.jobs {batched}", "commit on", on_postgres(500, "on")),
            (f"onewriter.jobs {single}", "commit off", on_postgres(1, "off")),
        ]
    rates: dict[tuple[str, str], float] = {}
    for name, sync, bench in runs:
        try:
            rate = bench(os.path.join(tempfile.mkdtemp(dir=scratch), "q.db"))
        except ImportError as exc:
            print(f"  {name}: skipped ({exc}; pip install -e '.[bench]')", flush=True)
            continue
        rates[name, sync] = rate
        print(f"  {name}, {sync}: {rate:,.0f} jobs/s", flush=True)
    peers = [rate for (name, _), rate in rates.items() if "onewriter" not in name]
    best_peer = max(peers, default=0.0)
    huey = next((rate for (name, _), rate in rates.items() if name.startswith("huey")), 0.0)

    def ratio(rate: float, base: float) -> str:
        return f"{rate / base:.1f}x" if base else "-"

    rows = [
        [name, sync, jobs, round(rate), ratio(rate, best_peer), ratio(rate, huey)]
        for (name, sync), rate in rates.items()
    ]
    headers = ["queue", "synchronous", "jobs", "jobs/s", "vs best peer", "vs huey"]
    return format_table(headers, rows)


def http_table(postgres: Any) -> str:
    """The heavy configuration on each store: SQLite (one service), PostgreSQL (one
    service, then two sharing the database); 2 HTTP worker processes per service."""
    runs: list[tuple[str, int, str | None]] = [("SQLite (NORMAL)", 1, None)]
    if postgres is not None:
        runs += [("PostgreSQL (commit off)", 1, "pg"), ("PostgreSQL (commit off)", 2, "pg")]
    rows: list[list[Any]] = []
    for store, instances, kind in runs:
        database = postgres.fresh_url(synchronous_commit="off") if kind else None
        print(f"  {store}, {instances} service instance(s):", flush=True)
        options = StressOptions(
            configs=("heavy",), http_workers=2, batch=8, database=database, instances=instances
        )
        [r] = stress(options)
        rows.append(
            [store, instances, r.workers, r.jobs, r.success_pct, r.p99_ms, r.throughput,
             r.duplicates, r.lost]
        )  # fmt: skip
    published = PUBLISHED["heavy"]
    rows.append(
        ["published Flask + SQLite", 1, rows[0][2], rows[0][3], published["success_pct"],
         published["p99_ms"], published["throughput"], "-", "-"]
    )  # fmt: skip
    headers = ["store", "services", "workers", "jobs", "success %", "p99 ms", "jobs/s",
               "duplicates", "lost"]  # fmt: skip
    return format_table(headers, rows)


def main() -> None:
    parser = _cli.parser("jobs", __doc__)
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per library run")
    parser.add_argument("--quick", action="store_true", help="a short run (5,000 jobs)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP stress runs")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    jobs = 5000 if args.quick else args.jobs
    command = "python -m benchmarks.jobs" + (" --quick" if args.quick else "")
    scratch = tempfile.mkdtemp(prefix="ow-bench-jobs-")
    server = contextlib.nullcontext(None) if args.no_postgres else throwaway_postgres()
    try:
        with server as postgres:
            print(f"library level, {jobs:,} jobs each:", flush=True)
            load_before = os.getloadavg()[0]
            table = library_table(jobs, scratch, postgres)
            size = f"{memory_gib():.0f} GiB of memory"
            if postgres is not None:
                size += (
                    f"; PostgreSQL {postgres_version(postgres)}, a server of the run's own "
                    "on loopback TCP (fsync on, default settings otherwise)"
                )
            body = (
                f"{size}. Load average (1 min) when the library runs began: "
                f"{load_before:.1f} on 2 CPUs (other work shares this machine; compare rows "
                "of one run, not runs).\n\n"
                "### Library level, in one process (enqueue + claim + complete)\n\n"
                f"```\n{table}\n```\n\n"
                'For PostgreSQL, "commit off" is `synchronous_commit=off` (like SQLite\'s '
                "NORMAL in WAL mode, a crash may lose the last commits, never corrupt); "
                '"commit on" waits for the WAL flush of every commit (like FULL).\n'
            )
            if not args.no_http:
                print("HTTP stress, heavy configuration:", flush=True)
                http = http_table(postgres)
                print(http, flush=True)
                body += (
                    "\n### HTTP service, the stress harness's heavy configuration\n\n"
                    "`onewriter jobs stress --configs heavy` (2 HTTP worker processes per "
                    "service; each of the 40 workers claims up to 8 jobs per request and "
                    "completes them in one request; p99 is over claims that got jobs and "
                    "completes). With two services sharing one PostgreSQL "
                    "(`--instances 2`), the workers are spread over both.\n\n"
                    f"```\n{http}\n```\n\n"
                    "On one machine the two services share its CPUs with each other, the "
                    "server and the 40 workers: that row shows that instances sharing one "
                    "database hand out every job exactly once, not how far more machines "
                    "scale.\n"
                )
        if not args.no_write:
            update_section("jobs", "Jobs end to end", command, body)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
