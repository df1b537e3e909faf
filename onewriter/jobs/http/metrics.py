"""Prometheus metrics of the HTTP service.

Queue figures come from the database at scrape time, so every process reports the same.
Request counters are kept per worker process and summed over all of them at each scrape
(``prometheus_client``'s multiprocess mode, see :mod:`onewriter.metrics`), so one
scrape of the port shows the whole service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ...metrics import Counters, exposition
from ..model import STATES


class HttpMetrics:
    """Requests served, by route and status, time spent by route, and jobs handled."""

    def __init__(self) -> None:
        self.counters = Counters()
        self._requests = self.counters.counter(
            "onewriter_jobs_http_requests", "HTTP requests served.", ("route", "status")
        )
        self._seconds = self.counters.counter(
            "onewriter_jobs_http_seconds", "Time spent serving, by route.", ("route",)
        )
        self._jobs = self.counters.counter(
            "onewriter_jobs_handled", "Jobs enqueued/claimed/completed/failed.", ("event",)
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self._requests.inc((route, status))
        self._seconds.inc((route,), seconds)

    def handled(self, event: str, count: int = 1) -> None:
        if count:
            self._jobs.inc((event,), count)


def _families(stats: dict[str, Any], writer: dict[str, Any] | None) -> Iterator[Metric]:
    queues = stats["queues"]
    jobs = GaugeMetricFamily(
        "onewriter_jobs", "Jobs by queue and state.", labels=["queue", "state"]
    )
    oldest = GaugeMetricFamily(
        "onewriter_jobs_oldest_ready_seconds", "Age of the oldest due ready job.", labels=["queue"]
    )
    done = GaugeMetricFamily(
        "onewriter_jobs_done_last_minute", "Jobs completed in the last minute.", labels=["queue"]
    )
    paused = GaugeMetricFamily(
        "onewriter_jobs_queue_paused", "1 while the queue is paused.", labels=["queue"]
    )
    for queue, figures in queues.items():
        for state in STATES:
            jobs.add_metric([queue, state], figures[state])
        oldest.add_metric([queue], figures["oldest_ready_age"])
        done.add_metric([queue], figures["done_last_minute"])
        paused.add_metric([queue], int(figures["paused"]))
    yield from (jobs, oldest, done, paused)
    if writer is not None:
        yield CounterMetricFamily(
            "onewriter_writer_commits", "Group commits by the writer.", writer.get("commits", 0)
        )
        yield CounterMetricFamily(
            "onewriter_writer_requests", "Requests run by the writer.", writer.get("requests", 0)
        )
        yield GaugeMetricFamily(
            "onewriter_writer_pending", "Requests queued at the writer.", writer.get("pending", 0)
        )


def render(stats: dict[str, Any], writer: dict[str, Any] | None, http: HttpMetrics) -> bytes:
    """The exposition for queue ``stats``, the ``writer``'s stats and every worker's
    request counters."""
    return exposition(http.counters, _families(stats, writer))
