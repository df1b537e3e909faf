"""The bodies of the processes ``benchmarks/writes.py`` starts (with ``spawn``).

A worker connects, waits at the barrier with every other worker of its cell, runs its
way of writing until its deadline, then sends a :class:`WorkerResult` through its pipe.
A cell's onewriter workers share one dedicated writer process, started first.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

import onewriter

from . import _writes_workloads as wl

BARRIER_TIMEOUT = 60.0
_MAX_MESSAGE = 120


@dataclass(frozen=True)
class Job:
    """What one worker process does."""

    path: str
    workload: str  # "insert" | "rmw"
    way: str  # a key of NAIVE, or "direct" / "sync" / "async" / "async-direct"
    durability: wl.Durability
    seconds: float
    process: int
    in_flight: int = 32


@dataclass
class WorkerResult:
    """What one worker measured; latencies in seconds, one per acknowledged write;
    ``elapsed`` from the barrier to the end of the worker's last transaction."""

    acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    elapsed: float = 0.0
    is_writer: bool = False


#: Naive ways: the transaction to run, and whether it issues its own BEGIN (on a
#: connection in autocommit mode) rather than leaving transactions to Python's default.
NAIVE: dict[str, tuple[Callable[[sqlite3.Connection, int], None], bool]] = {
    "naive": (wl.naive_insert, False),
    "naive-implicit": (wl.naive_rmw_implicit, False),
    "naive-deferred": (wl.naive_rmw_deferred, True),
    "naive-immediate": (wl.naive_rmw_immediate, True),
}


def error_key(exc: BaseException) -> str:
    """How errors are grouped in the results: type (or code) and message."""
    if isinstance(exc, onewriter.OneWriterError):
        text = f"{exc.code}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_MESSAGE]


def run_worker(job: Job, barrier: Barrier, pipe: Connection) -> None:
    """Entry point of a worker process."""
    try:
        if job.way in NAIVE:
            result = _run_naive(job, barrier)
        elif job.way in ("sync", "direct"):
            result = _run_sync(job, barrier)
        else:
            result = asyncio.run(_run_async(job, barrier))
        pipe.send(result)
    except BaseException as exc:
        barrier.abort()
        pipe.send(exc)
        raise
    finally:
        pipe.close()


def _run_naive(job: Job, barrier: Barrier) -> WorkerResult:
    transaction, explicit = NAIVE[job.way]
    conn = wl.naive_connection(job.path, job.durability, explicit_transactions=explicit)
    result = WorkerResult()
    try:
        barrier.wait(BARRIER_TIMEOUT)
        start = time.perf_counter()
        deadline = start + job.seconds
        now = start
        while now < deadline:
            try:
                transaction(conn, job.process)
            except sqlite3.Error as exc:
                result.errors[error_key(exc)] += 1
                if conn.in_transaction:
                    conn.rollback()
                now = time.perf_counter()
                continue
            done = time.perf_counter()
            result.acked += 1
            result.latencies.append(done - now)
            now = done
        result.elapsed = now - start
    finally:
        conn.close()
    return result


def _write_call(db: Any, workload: str, process: int) -> Callable[[], Any]:
    if workload == "insert":
        return lambda: db.write(wl.insert_item, process=process)
    return lambda: db.write(wl.increment_balance, process=process)


#: ``Config.writes`` of each onewriter way: in this process under the write turn, or
#: through the writer.
WRITES = {"direct": "direct", "sync": "funnel", "async": "funnel", "async-direct": "direct"}


def _run_sync(job: Job, barrier: Barrier) -> WorkerResult:
    db = onewriter.connect(job.path, ops=wl.ops, durability=job.durability, writes=WRITES[job.way])
    result = WorkerResult(is_writer=db.is_writer)
    call = _write_call(db, job.workload, job.process)
    try:
        barrier.wait(BARRIER_TIMEOUT)
        start = time.perf_counter()
        deadline = start + job.seconds
        now = start
        while now < deadline:
            try:
                call()
            except onewriter.OneWriterError as exc:
                result.errors[error_key(exc)] += 1
                now = time.perf_counter()
                continue
            done = time.perf_counter()
            result.acked += 1
            result.latencies.append(done - now)
            now = done
        result.elapsed = now - start
    finally:
        db.close()
    return result


async def _run_async(job: Job, barrier: Barrier) -> WorkerResult:
    db = await onewriter.connect_async(
        job.path, ops=wl.ops, durability=job.durability, writes=WRITES[job.way]
    )
    result = WorkerResult(is_writer=db.is_writer)
    call = _write_call(db, job.workload, job.process)
    loop = asyncio.get_running_loop()
    try:
        # The barrier blocks: wait in a thread so the loop (and its channel) keeps running.
        await loop.run_in_executor(None, barrier.wait, BARRIER_TIMEOUT)
        start = time.perf_counter()
        deadline = start + job.seconds
        last = start

        async def pump() -> None:
            nonlocal last
            now = time.perf_counter()
            while now < deadline:
                try:
                    await call()
                except onewriter.OneWriterError as exc:
                    result.errors[error_key(exc)] += 1
                    now = time.perf_counter()
                    last = max(last, now)
                    continue
                done = time.perf_counter()
                result.acked += 1
                result.latencies.append(done - now)
                last = max(last, done)
                now = done

        await asyncio.gather(*(pump() for _ in range(job.in_flight)))
        result.elapsed = last - start
    finally:
        await db.close()
    return result


def run_writer(path: str, durability: wl.Durability, pipe: Connection) -> None:
    """Entry point of the dedicated writer process: become the writer, say READY, serve
    until told to stop, then send the writer's stats and drain."""
    db = onewriter.connect(path, ops=wl.ops, durability=durability, role="writer")
    try:
        pipe.send("READY")
        pipe.recv()
        pipe.send(db.stats())
    finally:
        db.close()
        pipe.close()
