"""Jobs end to end (enqueue + claim + complete): onewriter.jobs against huey (SqliteHuey),
litequeue and persist-queue (SQLiteAckQueue) in one run on this machine, plus the HTTP
stress harness's heavy configuration. Writes the "jobs" section of docs/benchmarks.md.

Each library runs in this process on a fresh database file, at its own defaults (the
synchronous level each uses is shown). The peers have no batch API; onewriter is shown
both batched and one job at a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import onewriter
from benchmarks._report import update_section
from onewriter._tables import format_table
from onewriter.jobs import JobQueue, jobs_ops
from onewriter.jobs._stress import StressOptions, results_table, stress


def _timed(jobs: int, run: Callable[[], int]) -> float:
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    assert done == jobs, f"{done} of {jobs} jobs done"
    return jobs / elapsed


def bench_onewriter(path: str, jobs: int, batch: int, durability: str) -> float:
    ops = onewriter.Ops()
    ops.include(jobs_ops)
    db = onewriter.connect(path, ops=ops, durability=durability)
    try:
        queue = JobQueue(db)

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

        return _timed(jobs, run if batch > 1 else run_single)
    finally:
        db.close()


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


def library_table(jobs: int, scratch: str) -> str:
    """Every queue on its own fresh database file; the table of their rates."""
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
    rows = [
        [name, sync, jobs, round(rate), f"{rate / best_peer:.1f}x" if peers else "-"]
        for (name, sync), rate in rates.items()
    ]
    return format_table(["queue", "synchronous", "jobs", "jobs/s", "vs best peer"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per library run")
    parser.add_argument("--quick", action="store_true", help="a short run (5,000 jobs)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP stress run")
    args = parser.parse_args()
    jobs = 5000 if args.quick else args.jobs
    command = "python -m benchmarks.jobs" + (" --quick" if args.quick else "")
    scratch = tempfile.mkdtemp(prefix="ow-bench-jobs-")
    try:
        print(f"library level, {jobs:,} jobs each:", flush=True)
        table = library_table(jobs, scratch)
        body = (
            "### Library level, in one process (enqueue + claim + complete)\n\n"
            f"```\n{table}\n```\n"
        )
        if not args.no_http:
            print("HTTP stress, heavy configuration:", flush=True)
            results = stress(StressOptions(configs=("heavy",), http_workers=2, batch=8))
            print(results_table(results), flush=True)
            body += (
                "\n### HTTP service, the stress harness's heavy configuration\n\n"
                "`onewriter jobs stress --configs heavy` (2 HTTP worker processes; each of the "
                "40 workers claims up to 8 jobs per request and completes them in one "
                "request; p99 is over claims that got jobs and completes)\n\n"
                f"```\n{results_table(results)}\n```\n"
            )
        update_section("jobs", "Jobs end to end", command, body)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
