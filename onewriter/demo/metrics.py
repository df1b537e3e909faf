"""Request counters of one worker and the Prometheus text that shows them with the writer's.

Each worker counts its own requests (a scrape lands on one worker; the ``worker`` label
tells which); the writer's figures are the same whichever worker answers.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

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
    """Requests by method, route and status, and the seconds they took."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: defaultdict[tuple[str, str], float] = defaultdict(float)

    def add(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[(method, route)] += seconds


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


def _labels(**labels: Any) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: Writer figures shown as (metric, stats key, type, help).
_WRITER_SCALARS = (
    ("onewriter_writer_requests_total", "requests", "counter", "Write requests taken."),
    ("onewriter_writer_batches_total", "batches", "counter", "Batches run."),
    ("onewriter_writer_commits_total", "commits", "counter", "Transactions committed."),
    ("onewriter_writer_commit_failures_total", "commit_failures", "counter", "Failed COMMITs."),
    ("onewriter_writer_checkpoints_total", "checkpoints", "counter", "WAL checkpoints run."),
    ("onewriter_writer_pending", "pending", "gauge", "Requests queued at the writer."),
    ("onewriter_writer_clients", "clients", "gauge", "Connections to the writer."),
    ("onewriter_writer_wal_bytes", "wal_bytes", "gauge", "Size of the WAL file."),
)
_WRITER_QUANTILES = (
    ("onewriter_writer_batch_size", "batch_size", 1.0, "Requests per batch (recent)."),
    ("onewriter_writer_commit_seconds", "commit_ms", 0.001, "Time per batch (recent)."),
)
_QUANTILE_KEYS = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max"))


def prometheus_text(
    worker: int, mode: str, counts: RequestCounts, writer: dict[str, Any] | None
) -> str:
    """The exposition text: this worker's requests, then the writer's figures."""
    out: list[str] = [
        "# HELP onewriter_demo_requests_total HTTP requests answered by this worker.",
        "# TYPE onewriter_demo_requests_total counter",
    ]
    for (method, route, status), n in sorted(counts.requests.items()):
        labels = _labels(worker=worker, mode=mode, method=method, route=route, status=status)
        out.append(f"onewriter_demo_requests_total{labels} {n}")
    out += [
        "# HELP onewriter_demo_request_seconds_total Time spent answering, by route.",
        "# TYPE onewriter_demo_request_seconds_total counter",
    ]
    for (method, route), seconds in sorted(counts.seconds.items()):
        labels = _labels(worker=worker, mode=mode, method=method, route=route)
        out.append(f"onewriter_demo_request_seconds_total{labels} {seconds:.6f}")
    if writer:
        out += _writer_lines(writer)
    return "\n".join(out) + "\n"


def _writer_lines(stats: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for metric, key, kind, text in _WRITER_SCALARS:
        value = stats.get(key)
        if isinstance(value, int | float):
            out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric} {value}"]
    for metric, key, scale, text in _WRITER_QUANTILES:
        figures = stats.get(key)
        if isinstance(figures, dict):
            out += [f"# HELP {metric} {text}", f"# TYPE {metric} summary"]
            for quantile, name in _QUANTILE_KEYS:
                if name in figures:
                    out.append(f"{metric}{_labels(quantile=quantile)} {figures[name] * scale:g}")
    for metric, key, label in (
        ("onewriter_writer_ops_total", "ops", "op"),
        ("onewriter_writer_errors_total", "errors", "code"),
    ):
        figures = stats.get(key)
        if isinstance(figures, dict):
            out.append(f"# TYPE {metric} counter")
            for name, value in sorted(figures.items()):
                out.append(f"{metric}{_labels(**{label: name})} {value}")
    return out
