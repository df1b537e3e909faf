"""The load client's summary: figures as a dict (for ``--json``) and as tables."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..cli.tables import Block, Table, format_table, print_blocks

if TYPE_CHECKING:
    from .runner import LoadPlan, Recorder

Summary = dict[str, Any]

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def latency_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95, p99 (nearest rank) and max, in milliseconds."""
    if not seconds:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    data = sorted(seconds)
    n = len(data)
    figures = {name: data[max(0, math.ceil(q * n) - 1)] * 1000 for name, q in QUANTILES}
    figures["max"] = data[-1] * 1000
    return {name: round(value, 3) for name, value in figures.items()}


def _kind_figures(latencies: list[float], ok: int, elapsed: float) -> dict[str, Any]:
    n = len(latencies)
    return {
        "requests": n,
        "ok": ok,
        "errors": n - ok,
        "throughput": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": latency_ms(latencies),
    }


def summarize(plan: LoadPlan, recorder: Recorder, elapsed: float, *, interrupted: bool) -> Summary:
    """Everything the report shows, JSON-ready."""
    reads, writes = recorder.tallies["read"], recorder.tallies["write"]
    counted = sorted(
        (
            (count, kind, status, code)
            for kind, tally in recorder.tallies.items()
            for (status, code), count in tally.errors.items()
        ),
        key=lambda e: (-e[0], e[1], e[2], e[3]),
    )
    errors = [
        {"kind": kind, "status": status, "code": code, "count": count}
        for count, kind, status, code in counted
    ]
    return {
        "url": plan.url,
        "mode": "sustained" if plan.sustained else "batch",
        "rate": plan.rate,
        "duration_s": plan.duration,
        "connections": plan.connections,
        "elapsed_s": round(elapsed, 3),
        "interrupted": interrupted,
        "reads": _kind_figures(reads.latencies, reads.ok, elapsed),
        "writes": _kind_figures(writes.latencies, writes.ok, elapsed),
        "total": _kind_figures(reads.latencies + writes.latencies, reads.ok + writes.ok, elapsed),
        "acknowledged_writes": writes.ok,
        "errors": errors,
        "workers": dict(sorted(recorder.workers.items())),
    }


def report_blocks(summary: Summary) -> list[Block]:
    """The summary as lines and three tables: latency by kind, errors, requests per worker."""
    how = f"{summary['mode']} load on {summary['url']}, {summary['connections']} connections"
    if summary["rate"]:
        how += f", {summary['rate']:g} req/s asked"
    how += f", {summary['elapsed_s']:.1f} s"
    if summary["interrupted"]:
        how += " (interrupted)"
    rows = []
    for label, key in (("reads", "reads"), ("writes", "writes"), ("all", "total")):
        kind = summary[key]
        lat = kind["latency_ms"]
        rows.append(
            [
                label,
                kind["requests"],
                kind["ok"],
                kind["errors"],
                kind["throughput"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                lat["max"],
            ]
        )
    headers = ["requests", "count", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    blocks: list[Block] = [how, "", Table(headers, rows), ""]
    if summary["errors"]:
        error_rows = [[e["kind"], e["status"], e["code"], e["count"]] for e in summary["errors"]]
        blocks += [Table(["error of", "status", "code", "count"], error_rows), ""]
    else:
        blocks += ["errors: none", ""]
    workers = summary["workers"]
    answered = sum(workers.values())
    worker_rows = [[pid, count, round(100 * count / answered, 1)] for pid, count in workers.items()]
    if worker_rows:
        blocks.append(Table(["worker pid", "requests", "share %"], worker_rows))
    else:
        blocks.append("no response named a worker")
    return blocks


def format_report(summary: Summary) -> str:
    """The report as plain text."""
    return "\n".join(
        b if isinstance(b, str) else format_table(b.headers, b.rows, b.right)
        for b in report_blocks(summary)
    )


def print_report(summary: Summary, *, plain: bool = False) -> None:
    """The report on stdout: rich tables on a terminal (unless ``plain``)."""
    print_blocks(report_blocks(summary), plain=plain)
