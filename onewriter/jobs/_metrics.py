"""Prometheus text exposition for the HTTP service.

Queue figures come from the database, so every process reports the same. Request
counters are this process's own and carry its ``pid`` label: with several worker
processes behind one port, sum them by route in your queries.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from ._model import STATES


class HttpMetrics:
    """Requests served by this process, by route and status, with time spent."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.seconds: dict[str, float] = {}
        self.jobs: Counter[str] = Counter()

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.seconds[route] = self.seconds.get(route, 0.0) + seconds


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def render(stats: dict[str, Any], writer: dict[str, Any] | None, http: HttpMetrics) -> str:
    """The exposition text for queue ``stats``, the ``writer``'s stats and this process."""
    pid = os.getpid()
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("onewriter_jobs", "gauge", "Jobs by queue and state.")
    for queue, figures in stats["queues"].items():
        for state in STATES:
            out.append(f"onewriter_jobs{_labels(queue=queue, state=state)} {figures[state]}")
    family("onewriter_jobs_queue_paused", "gauge", "1 while the queue is paused.")
    for queue, figures in stats["queues"].items():
        out.append(f"onewriter_jobs_queue_paused{_labels(queue=queue)} {int(figures['paused'])}")
    family("onewriter_jobs_oldest_ready_seconds", "gauge", "Age of the oldest due ready job.")
    for queue, figures in stats["queues"].items():
        age = figures["oldest_ready_age"]
        out.append(f"onewriter_jobs_oldest_ready_seconds{_labels(queue=queue)} {age}")
    family("onewriter_jobs_done_last_minute", "gauge", "Jobs completed in the last minute.")
    for queue, figures in stats["queues"].items():
        done = figures["done_last_minute"]
        out.append(f"onewriter_jobs_done_last_minute{_labels(queue=queue)} {done}")
    if writer is not None:
        family("onewriter_writer_commits_total", "counter", "Group commits by the writer.")
        out.append(f"onewriter_writer_commits_total {writer.get('commits', 0)}")
        family("onewriter_writer_requests_total", "counter", "Requests run by the writer.")
        out.append(f"onewriter_writer_requests_total {writer.get('requests', 0)}")
        family("onewriter_writer_pending", "gauge", "Requests queued at the writer.")
        out.append(f"onewriter_writer_pending {writer.get('pending', 0)}")
    family("onewriter_jobs_http_requests_total", "counter", "HTTP requests by this process.")
    for (route, status), n in sorted(http.requests.items()):
        labels = _labels(pid=pid, route=route, status=status)
        out.append(f"onewriter_jobs_http_requests_total{labels} {n}")
    family("onewriter_jobs_http_seconds_total", "counter", "Time spent serving, by route.")
    for route, seconds in sorted(http.seconds.items()):
        labels = _labels(pid=pid, route=route)
        out.append(f"onewriter_jobs_http_seconds_total{labels} {seconds:.6f}")
    family("onewriter_jobs_handled_total", "counter", "Jobs claimed/completed/failed here.")
    for event, n in sorted(http.jobs.items()):
        out.append(f"onewriter_jobs_handled_total{_labels(pid=pid, event=event)} {n}")
    return "\n".join(out) + "\n"
