"""``onewriter jobs stress``: the published Flask + SQLite queue table, reproduced.

Starts the HTTP service on a scratch database (or on a PostgreSQL database, optionally
as several instances sharing it, the workers spread over them), then for each
configuration starts its
workers (each a real HTTP client on its own connection: claim a batch, run, complete the
batch), enqueues the jobs in batches, and measures until every job is done or the time
runs out. Duplicates (a job completed twice) and lost jobs (never done) must be 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..cli.progress import LiveProgress
from ..cli.tables import Table, print_blocks
from .api.sync import is_postgres_url
from .http.remote import RemoteQueue
from .model import NewJob

#: name -> (workers, jobs), as published.
CONFIGS: dict[str, tuple[int, int]] = {"light": (5, 50), "medium": (15, 500), "heavy": (40, 2000)}

#: The published figures for a Flask + SQLite queue on a small cloud box.
PUBLISHED: dict[str, dict[str, float]] = {
    "light": {"throughput": 3.72},
    "medium": {"throughput": 13.27, "success_pct": 98.75},
    "heavy": {"throughput": 13.62, "success_pct": 99.01, "p99_ms": 2586.0},
}

_ENQUEUE_BATCH = 500
_CONFIG_TIMEOUT = 120.0
_START_TIMEOUT = 60.0


@dataclass(frozen=True, kw_only=True)
class StressOptions:
    configs: tuple[str, ...] = ("light", "medium", "heavy")
    http_workers: int = 2
    batch: int = 8
    work_ms: float = 0.0
    database: str | None = None
    instances: int = 1
    """Service instances sharing the store (PostgreSQL only)."""
    progress: bool = True
    plain: bool = False
    """Plain text on a terminal too (no rich progress bars or tables)."""


@dataclass(frozen=True, kw_only=True)
class StressResult:
    config: str
    workers: int
    jobs: int
    success_pct: float
    p99_ms: float
    """The 99th percentile of the workers' requests: claims that got jobs, and completes."""
    throughput: float
    """Jobs done per second, from the first enqueue (then the workers start) to the last
    completion."""
    duplicates: int
    lost: int
    errors: int
    seconds: float


class _Tally:
    """What the workers of one configuration saw."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.completions: dict[int, int] = {}
        self.errors = 0

    @property
    def completed(self) -> int:
        return len(self.completions)


async def _worker(
    url: str, queue: str, batch: int, work_ms: float, tally: _Tally, stop: asyncio.Event
) -> None:
    name = f"stress-{uuid.uuid4().hex[:6]}"
    async with RemoteQueue(url, max_connections=1, worker=name) as remote:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                jobs = await remote.claim(queue, limit=batch, wait=0.5, lease=60)
            except Exception:
                tally.errors += 1
                await asyncio.sleep(0.05)
                continue
            if not jobs:
                continue  # the queue is drained: a long-poll's wait is not a latency
            tally.latencies.append(time.perf_counter() - started)
            if work_ms > 0:
                await asyncio.sleep(work_ms / 1000)
            started = time.perf_counter()
            try:
                held = await remote.complete_many([(j.id, j.token or "", None) for j in jobs])
            except Exception:
                tally.errors += 1
                continue
            tally.latencies.append(time.perf_counter() - started)
            for job, ok in zip(jobs, held, strict=True):
                if ok:
                    tally.completions[job.id] = tally.completions.get(job.id, 0) + 1
                else:
                    tally.errors += 1


def _p99(samples: list[float]) -> float:
    if not samples:
        return 0.0
    data = sorted(samples)
    return data[min(len(data) - 1, int(0.99 * (len(data) - 1) + 0.5))]


async def run_config(urls: Sequence[str], name: str, options: StressOptions) -> StressResult:
    """One configuration against running service instances (workers spread over them)."""
    workers, jobs = CONFIGS[name]
    queue = f"stress-{name}-{uuid.uuid4().hex[:8]}"
    tally = _Tally()
    stop = asyncio.Event()
    started = time.perf_counter()
    deadline = time.monotonic() + _CONFIG_TIMEOUT
    async with RemoteQueue(urls[0]) as producer:
        for first in range(0, jobs, _ENQUEUE_BATCH):
            count = min(_ENQUEUE_BATCH, jobs - first)
            specs = [NewJob(payload={"n": first + i}) for i in range(count)]
            await producer.enqueue_many(queue, specs)
        tasks = [
            asyncio.create_task(
                _worker(urls[i % len(urls)], queue, options.batch, options.work_ms, tally, stop)
            )
            for i in range(workers)
        ]
        shown = LiveProgress(f"  {name}", jobs, plain=options.plain) if options.progress else None
        last_shown = 0.0
        while tally.completed < jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if shown is not None and time.monotonic() - last_shown > 0.25:
                last_shown = time.monotonic()
                shown.update(tally.completed, _done_text(tally.completed, jobs, started))
        elapsed = time.perf_counter() - started
        if shown is not None:
            shown.close(_done_text(tally.completed, jobs, started, elapsed))
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        done = (await producer.stats())["queues"].get(queue, {}).get("done", 0)
    return StressResult(
        config=name,
        workers=workers,
        jobs=jobs,
        success_pct=round(100.0 * tally.completed / jobs, 2),
        p99_ms=round(1000 * _p99(tally.latencies), 2),
        throughput=round(tally.completed / elapsed, 2),
        duplicates=sum(n - 1 for n in tally.completions.values()),
        lost=jobs - done,
        errors=tally.errors,
        seconds=round(elapsed, 3),
    )


def _done_text(done: int, total: int, started: float, elapsed: float | None = None) -> str:
    elapsed = time.perf_counter() - started if elapsed is None else elapsed
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{done}/{total} jobs done, {rate:,.0f} jobs/s"


class ServiceProcess:
    """``onewriter jobs serve`` in a child process, waited on until READY."""

    def __init__(self, database: str, http_workers: int) -> None:
        command = [
            sys.executable, "-m", "onewriter.cli", "jobs", "serve", database,
            "--port", "0", "--workers", str(http_workers), "--max-pending", "20000",
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self._ready = threading.Event()
        self.info: dict[str, Any] = {}
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(_START_TIMEOUT) or not self.info:
            self.stop()
            raise RuntimeError("the jobs service did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY "):
                self.info = json.loads(line[len("READY ") :])
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def stop(self) -> None:
        """terminate -> wait -> kill."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def stress(options: StressOptions) -> list[StressResult]:
    """Run the configurations against a fresh service; the results."""
    unknown = [c for c in options.configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s): {', '.join(unknown)}")
    if options.instances > 1 and not is_postgres_url(options.database or ""):
        raise SystemExit("several service instances need a PostgreSQL store (postgresql://...)")
    with tempfile.TemporaryDirectory(prefix="ow-stress-") as scratch:
        database = options.database or os.path.join(scratch, "stress.db")
        services: list[ServiceProcess] = []
        try:
            for _ in range(options.instances):
                services.append(ServiceProcess(database, options.http_workers))
            urls = [service.url for service in services]
            return [asyncio.run(run_config(urls, name, options)) for name in options.configs]
        finally:
            for service in services:
                service.stop()


def results_table(results: list[StressResult]) -> Table:
    """The results, each followed by the published figures of its configuration."""
    headers = ["config", "workers", "jobs", "success %", "p99 ms", "jobs/s", "duplicates", "lost"]
    rows: list[list[Any]] = []
    for r in results:
        measured = (r.success_pct, r.p99_ms, r.throughput, r.duplicates, r.lost)
        rows.append([r.config, r.workers, r.jobs, *measured])
        published = PUBLISHED.get(r.config)
        if published:
            reference = (
                published.get("success_pct", "-"),
                published.get("p99_ms", "-"),
                published["throughput"],
            )
            rows.append(["  published", r.workers, r.jobs, *reference, "-", "-"])
    return Table(headers, rows)


def run_stress(options: StressOptions, json_out: bool = False) -> int:
    """The CLI: run, print the table (and JSON); exit 1 on a duplicate or a lost job."""
    results = stress(options)
    print_blocks([results_table(results)], plain=options.plain)
    if json_out:
        print("RESULTS " + json.dumps([asdict(r) for r in results]), flush=True)
    return 1 if any(r.duplicates or r.lost for r in results) else 0
