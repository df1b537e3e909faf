"""Running one cell of ``benchmarks/writes.py``: one workload, one way of writing, one
durability, N processes started together on a fresh database."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from . import _writes_workloads as wl
from ._writes_worker import BARRIER_TIMEOUT, NAIVE, Job, WorkerResult, run_worker, run_writer

#: How long past its planned end a cell may take before it counts as hung (a naive
#: transaction may wait out its 5 s busy timeout; a client its client timeout).
_GRACE = BARRIER_TIMEOUT + 90.0
_WRITER_READY_TIMEOUT = 60.0

WAYS: dict[str, tuple[str, ...]] = {
    "insert": ("naive", "direct", "sync", "async", "async-direct"),
    "rmw": (
        "naive-implicit",
        "naive-deferred",
        "naive-immediate",
        "direct",
        "sync",
        "async",
        "async-direct",
    ),
}

LABELS = {
    "naive": "naive",
    "naive-implicit": "naive, Python default",
    "naive-deferred": "naive, BEGIN (deferred)",
    "naive-immediate": "naive, BEGIN IMMEDIATE",
    "direct": "onewriter direct, 1 in flight",
    "sync": "onewriter funnel, 1 in flight",
    "async": "onewriter asyncio funnel, 32 in flight",
    "async-direct": "onewriter asyncio direct, 32 in flight",
}

WORKLOADS = {
    "insert": "single-row inserts",
    "rmw": "read-modify-write (SELECT balance, UPDATE balance + 1, INSERT a row)",
}


@dataclass
class Cell:
    """The merged figures of one cell. Latencies (seconds) are those of acknowledged
    transactions; ``window`` runs from the common start to the end of the last transaction."""

    durability: wl.Durability
    workload: str
    way: str
    processes: int
    acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    window: float = 0.0
    stored: int = 0
    writer: str = "-"
    batch_p50: float | None = None

    @property
    def onewriter(self) -> bool:
        return self.way not in NAIVE

    @property
    def per_second(self) -> float:
        return self.acked / self.window if self.window > 0 else 0.0

    def latency(self, q: float) -> float:
        """The ``q`` quantile (1.0 is the maximum), in seconds."""
        if not self.latencies:
            return 0.0
        return self.latencies[round(q * (len(self.latencies) - 1))]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def lost(self) -> int:
        """Acknowledged transactions missing from the database (negative: applied
        without an acknowledgement)."""
        return self.acked - self.stored


def run_cell(
    ctx: SpawnContext,
    durability: wl.Durability,
    workload: str,
    way: str,
    processes: int,
    seconds: float,
    in_flight: int,
) -> Cell:
    """Run one cell on a fresh database in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="owb-") as directory:
        path = os.path.join(directory, "bench.db")
        wl.prepare(path, durability)
        cell = Cell(durability, workload, way, processes)
        started: list[SpawnProcess] = []
        writer_pipe = None
        try:
            if cell.onewriter:
                writer_pipe = _start_writer(ctx, path, durability, started)
            jobs = [
                Job(path, workload, way, durability, seconds, process, in_flight)
                for process in range(processes)
            ]
            results = _run_workers(ctx, jobs, seconds, started)
            if writer_pipe is not None:
                writer_pipe.send("stop")
                stats = _receive(writer_pipe, _WRITER_READY_TIMEOUT, "writer stats")
                cell.batch_p50 = float(stats["batch_size"]["p50"])
                workers_writing = sum(r.is_writer for r in results)
                cell.writer = "own process" if not workers_writing else "a worker"
        finally:
            if writer_pipe is not None:
                writer_pipe.close()  # a writer still waiting for "stop" sees EOF and drains
            _stop(started)
        _merge(cell, results)
        cell.stored = wl.stored(path, workload)
    return cell


def _start_writer(
    ctx: SpawnContext, path: str, durability: wl.Durability, started: list[SpawnProcess]
) -> Connection:
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=run_writer, args=(path, durability, theirs), name="writer")
    process.start()
    started.append(process)
    theirs.close()
    ready = _receive(ours, _WRITER_READY_TIMEOUT, "the writer's READY")
    if ready != "READY":
        raise RuntimeError(f"the writer process said {ready!r} instead of READY")
    return ours


def _run_workers(
    ctx: SpawnContext, jobs: list[Job], seconds: float, started: list[SpawnProcess]
) -> list[WorkerResult]:
    barrier = ctx.Barrier(len(jobs))
    pipes = []
    for job in jobs:
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=run_worker, args=(job, barrier, theirs))
        process.start()
        started.append(process)
        theirs.close()
        pipes.append(ours)
    results = []
    for pipe in pipes:
        result = _receive(pipe, seconds + _GRACE, "a worker's result")
        if isinstance(result, BaseException):
            raise RuntimeError(f"a worker failed: {result!r}") from result
        results.append(result)
    return results


def _receive(pipe: Connection, timeout: float, what: str) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no {what} within {timeout:.0f} s")
    return pipe.recv()


def _stop(processes: Iterable[SpawnProcess]) -> None:
    """Wait for every process to exit; terminate, then kill, any that does not."""
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def _merge(cell: Cell, results: list[WorkerResult]) -> None:
    latencies: list[float] = []
    for result in results:
        cell.acked += result.acked
        cell.errors.update(result.errors)
        cell.window = max(cell.window, result.elapsed)
        latencies.extend(result.latencies)
    latencies.sort()
    cell.latencies = latencies


def spawn_context() -> SpawnContext:
    return multiprocessing.get_context("spawn")
