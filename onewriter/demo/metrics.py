"""Request counters of the demo's workers and the Prometheus text that shows them with
the writer's.

Each worker counts its own requests into the primary's multiprocess directory, and a
scrape (whichever worker it lands on) sums them all; the writer's figures are the same
whichever worker answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..metrics import Counters, exposition

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_of(path: str) -> str:
    """The route template of a path, so that labels stay few."""
    if path.startswith("/posts/"):
        return "/posts/{id}"
    if path in ("/posts", "/healthz", "/stats", "/metrics"):
        return path
    return "other"


class RequestCounts:
    """Requests by method, route and status, and the seconds they took (every worker
    process's, summed at each scrape: see :mod:`onewriter.metrics`)."""

    def __init__(self, mode: str = "onewriter") -> None:
        self.mode = mode
        """The store's mode, a label (set once the worker's store is open)."""
        self.counters = Counters()
        self._requests = self.counters.counter(
            "onewriter_demo_requests",
            "HTTP requests answered, by every worker.",
            ("mode", "method", "route", "status"),
        )
        self._seconds = self.counters.counter(
            "onewriter_demo_request_seconds",
            "Time spent answering, by route.",
            ("mode", "method", "route"),
        )

    def add(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.inc((self.mode, method, route, status))
        self._seconds.inc((self.mode, method, route), seconds)


class CountRequests:
    """ASGI middleware feeding :class:`RequestCounts` (cheaper than a Starlette
    ``BaseHTTPMiddleware``: no extra task per request)."""

    def __init__(self, app: ASGIApp, counts: RequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.counts.add(
                scope["method"], route_of(scope["path"]), status, time.perf_counter() - started
            )


#: Writer figures shown as (metric, stats key, type, help).
_WRITER_SCALARS = (
    ("onewriter_writer_requests", "requests", "counter", "Write requests taken."),
    ("onewriter_writer_batches", "batches", "counter", "Batches run."),
    ("onewriter_writer_commits", "commits", "counter", "Transactions committed."),
    ("onewriter_writer_commit_failures", "commit_failures", "counter", "Failed COMMITs."),
    ("onewriter_writer_checkpoints", "checkpoints", "counter", "WAL checkpoints run."),
    ("onewriter_writer_pending", "pending", "gauge", "Requests queued at the writer."),
    ("onewriter_writer_clients", "clients", "gauge", "Connections to the writer."),
    ("onewriter_writer_wal_bytes", "wal_bytes", "gauge", "Size of the WAL file."),
)
_WRITER_QUANTILES = (
    ("onewriter_writer_batch_size", "batch_size", 1.0, "Requests per batch (recent)."),
    ("onewriter_writer_commit_seconds", "commit_ms", 0.001, "Time per batch (recent)."),
)
_QUANTILE_KEYS = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max"))


def prometheus_text(counts: RequestCounts, writer: dict[str, Any] | None) -> bytes:
    """The exposition: every worker's requests, then the writer's figures."""
    return exposition(counts.counters, _writer_families(writer or {}))


def _writer_families(stats: dict[str, Any]) -> Iterator[Metric]:
    for metric, key, kind, text in _WRITER_SCALARS:
        value = stats.get(key)
        if isinstance(value, int | float):
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(metric, text, value=value)
    for metric, key, scale, text in _WRITER_QUANTILES:
        figures = stats.get(key)
        if isinstance(figures, dict):
            summary = Metric(metric, text, "summary")
            for quantile, name in _QUANTILE_KEYS:
                if name in figures:
                    summary.add_sample(metric, {"quantile": quantile}, figures[name] * scale)
            yield summary
    for metric, key, label, text in (
        ("onewriter_writer_ops", "ops", "op", "Requests run, by op."),
        ("onewriter_writer_errors", "errors", "code", "Requests refused or failed, by code."),
    ):
        figures = stats.get(key)
        if isinstance(figures, dict):
            counter = CounterMetricFamily(metric, text, labels=[label])
            for name, value in sorted(figures.items()):
                counter.add_metric([name], value)
            yield counter
