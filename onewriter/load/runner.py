"""Driving the load: one batch of concurrent requests, or sustained load for a duration.

Reads are ``GET /posts``, writes ``POST /posts``, interleaved evenly in the ratio asked.
Each of ``connections`` keep-alive connections sends one request at a time. With a
rate, request *i* is due at ``start + i / rate`` and its latency counts from that moment,
so that a slow server cannot hide its queueing by slowing the client down.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TextIO

from ..cli.progress import LiveProgress
from .client import Connection, HttpError, Target
from .report import Summary, summarize

Kind = Literal["read", "write"]

#: Pause of a connection after a failed connect, so a dead server is not hammered.
RECONNECT_PAUSE = 0.05


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """What load to send where."""

    url: str = "http://127.0.0.1:3000"
    reads: int = 20
    writes: int = 50
    connections: int = 32
    rate: float | None = None
    """Requests per second in all; ``None`` for as fast as the server answers."""
    duration: float | None = None
    """Seconds of sustained load; ``None`` for one batch of ``reads`` + ``writes``."""
    timeout: float = 30.0
    page: int = 20
    """``limit`` of each read."""

    def __post_init__(self) -> None:
        if self.reads < 0 or self.writes < 0 or self.reads + self.writes == 0:
            raise ValueError("reads and writes must be >= 0 and not both 0")
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (leave it out for no limit)")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")

    @property
    def sustained(self) -> bool:
        return self.duration is not None


class Tally:
    """Outcomes of one kind of request."""

    __slots__ = ("errors", "latencies", "ok")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ok = 0
        self.errors: Counter[tuple[int, str]] = Counter()


class Recorder:
    """Every outcome, by kind, error and worker pid."""

    def __init__(self) -> None:
        self.tallies: dict[Kind, Tally] = {"read": Tally(), "write": Tally()}
        self.workers: Counter[str] = Counter()
        self.count = 0
        self.failed = 0

    def add(self, kind: Kind, status: int, code: str, seconds: float, worker: str | None) -> None:
        tally = self.tallies[kind]
        tally.latencies.append(seconds)
        self.count += 1
        if code:
            tally.errors[(status, code)] += 1
            self.failed += 1
        else:
            tally.ok += 1
        if worker is not None:
            self.workers[worker] += 1


def mix(reads: int, writes: int) -> list[Kind]:
    """``reads`` reads and ``writes`` writes, spread evenly through one sequence."""
    slots: list[tuple[float, Kind]] = [((i + 0.5) / reads, "read") for i in range(reads)]
    slots += [((i + 0.5) / writes, "write") for i in range(writes)]
    slots.sort(key=lambda slot: slot[0])
    return [kind for _, kind in slots]


def error_code(status: int, body: bytes) -> str:
    """The ``error.code`` of an error response, or ``HTTP_<status>``."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP_{status}"
    return str(code)


class LoadRun:
    """One run of a plan; :meth:`run` returns the recorder once the load is over."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.target = Target(plan.url)
        self.pattern = mix(plan.reads, plan.writes)
        self.recorder = Recorder()
        self.stop = asyncio.Event()
        self.interrupted = False
        self.started = 0.0
        self.elapsed = 0.0
        self._next = 0
        self._read_path = f"/posts?limit={plan.page}"

    async def run(self, progress: Callable[[LoadRun], None] | None = None) -> Recorder:
        plan = self.plan
        total = None if plan.sustained else len(self.pattern)
        count = plan.connections if total is None else min(plan.connections, total)
        self.started = time.perf_counter()
        loop = asyncio.get_running_loop()
        ender = loop.call_later(plan.duration, self.stop.set) if plan.duration else None
        reporter = asyncio.ensure_future(self._report(progress)) if progress else None
        try:
            await asyncio.gather(*(self._connection(total) for _ in range(count)))
        finally:
            self.elapsed = time.perf_counter() - self.started
            if ender is not None:
                ender.cancel()
            if reporter is not None:
                reporter.cancel()
        return self.recorder

    def interrupt(self) -> None:
        """End the load early: each connection finishes its request and stops."""
        self.interrupted = True
        self.stop.set()

    async def _report(self, progress: Callable[[LoadRun], None]) -> None:
        while True:
            await asyncio.sleep(0.25)
            progress(self)

    async def _connection(self, total: int | None) -> None:
        plan = self.plan
        connection = Connection(self.target, plan.timeout)
        pattern = self.pattern
        record = self.recorder.add
        clock = time.perf_counter
        try:
            while not self.stop.is_set():
                index = self._next
                if total is not None and index >= total:
                    return
                self._next = index + 1
                kind = pattern[index % len(pattern)]
                started = clock()
                if plan.rate is not None:
                    due = self.started + index / plan.rate
                    if plan.duration is not None and due > self.started + plan.duration:
                        return
                    if due > started:
                        await asyncio.sleep(due - started)
                        if self.stop.is_set():
                            return
                    started = due
                try:
                    if kind == "read":
                        response = await connection.request("GET", self._read_path)
                    else:
                        response = await connection.request("POST", "/posts", _post_body(index))
                except HttpError as exc:
                    record(kind, 0, exc.code, clock() - started, None)
                    if exc.code.startswith("CONNECT"):
                        await asyncio.sleep(RECONNECT_PAUSE)
                    continue
                status = response.status
                good = status == (200 if kind == "read" else 201)
                code = "" if good else error_code(status, response.body)
                record(kind, status, code, clock() - started, response.headers.get("x-worker"))
        finally:
            connection.close()


def _post_body(index: int) -> bytes:
    return b'{"title":"load %d","content":"written by the load client"}' % index


def show_progress(run: LoadRun, shown: LiveProgress) -> None:
    """The run's figures so far: a bar over the batch's requests or the duration."""
    now = time.perf_counter() - run.started
    done = run.recorder.count
    completed = now if run.plan.duration is not None else done
    shown.update(
        completed,
        f"{now:5.1f} s  {done:,} requests  {done / max(now, 1e-9):,.0f} req/s  "
        f"{run.recorder.failed:,} errors",
    )


def run_load(
    plan: LoadPlan,
    *,
    progress: bool = True,
    handle_signals: bool = True,
    plain: bool = False,
    progress_out: TextIO | None = None,
) -> Summary:
    """Run ``plan`` on a fresh event loop and summarize it, showing progress on
    ``progress_out`` (stderr; ``plain``: no rich bar). SIGINT or SIGTERM end the load
    early; the summary then says ``interrupted``."""

    async def main() -> Summary:
        load = LoadRun(plan)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, load.interrupt)
        shown = None
        if progress:
            total = plan.duration if plan.duration is not None else len(load.pattern)
            shown = LiveProgress("load", total, out=progress_out, plain=plain)
        try:
            recorder = await load.run(None if shown is None else lambda r: show_progress(r, shown))
        finally:
            if shown is not None:
                show_progress(load, shown)
                shown.close()
        return summarize(plan, recorder, load.elapsed, interrupted=load.interrupted)

    return asyncio.run(main())
