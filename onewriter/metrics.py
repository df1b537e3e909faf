"""Prometheus exposition shared by the HTTP services (the demo and ``onewriter jobs
serve``), through ``prometheus_client``.

Their primary process makes a private directory and hands it to its worker processes as
``PROMETHEUS_MULTIPROC_DIR``: each worker's counters then live in memory-mapped files
there, and whichever worker answers a scrape sums every worker's (those of workers that
died and were restarted included, so that counters never go backwards). A service run
in one process (tests, ``--workers 0``) counts in a registry of its own.

Observations add to a plain dict and reach ``prometheus_client`` at most
:data:`FLUSH_EVERY` seconds later (and before this process answers a scrape): writing
the shared files on every request cost 3 to 4 times the old hand-kept counters. A scrape
may therefore show another worker's last second not yet, and a worker killed outright
loses at most its last second of counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds between pushes of this process's observations into ``prometheus_client``.
FLUSH_EVERY = 1.0


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh private directory for the workers' counter files, removed at exit."""
    with tempfile.TemporaryDirectory(prefix="onewriter-metrics-") as path:
        yield path


def multiprocess() -> str | None:
    """This process's multiprocess directory (``prometheus_client`` chose its value
    class by the same variable when first imported)."""
    return os.environ.get(MULTIPROC_ENV) or None


class Counters:
    """The counters of one app (one per process), flushed together."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        # In multiprocess mode the values go to the shared files; no registry collects them.
        self._register_in = None if multiprocess() else self.registry
        self._counters: list[LabelledCounter] = []

    def counter(self, name: str, documentation: str, labels: Iterable[str]) -> LabelledCounter:
        metric = Counter(name, documentation, list(labels), registry=self._register_in)
        self._counters.append(LabelledCounter(metric))
        return self._counters[-1]

    def flush(self) -> None:
        for counter in self._counters:
            counter.flush()

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """Flush every :data:`FLUSH_EVERY` seconds while the app serves, and at its end."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                self.flush()

        task = asyncio.create_task(loop(), name="onewriter-metrics-flush")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.flush()


class LabelledCounter:
    """A counter whose observations wait in a dict until :meth:`flush`."""

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[tuple[Any, ...], Any] = {}
        self._pending: dict[tuple[Any, ...], float] = {}

    def inc(self, labels: tuple[Any, ...], amount: float = 1.0) -> None:
        """Count ``amount`` for ``labels`` (any values; made strings when flushed)."""
        self._pending[labels] = self._pending.get(labels, 0.0) + amount

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for labels, amount in pending.items():
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = self._metric.labels(*map(str, labels))
            child.inc(amount)


class _Snapshot(Collector):
    """Families computed at scrape time (figures read from the database or the writer)."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


def exposition(counters: Counters, families: Iterable[Metric]) -> bytes:
    """The text for a scrape: every worker process's counters (or this process's), then
    the scrape-time ``families``."""
    counters.flush()
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess()
    if path is not None:
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Snapshot(counters.registry.collect))
    snapshot = list(families)
    registry.register(_Snapshot(lambda: snapshot))
    return generate_latest(registry)
