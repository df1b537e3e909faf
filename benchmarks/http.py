"""The demo service under HTTP load: onewriter with 1, 2 and 4 workers sending their writes
to the primary, 4 workers writing directly under the write turn (``--direct``), and the same
app writing naively (each worker on its own connection, busy_timeout, same PRAGMAs).

Each configuration runs on a fresh database: the service starts (``onewriter demo serve``
in a child process), a short warm-up batch runs, then the load client sends half reads
(``GET /posts?limit=20``) and half writes (``POST /posts``) over 32 keep-alive connections,
as fast as they are answered, for a fixed time. The load client runs in this process.

    python -m benchmarks.http            # 20 s a configuration
    python -m benchmarks.http --quick    # 3 s a configuration, for a smoke run
"""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onewriter.cli.tables import format_table
from onewriter.demo.launch import ServiceProcess
from onewriter.load import LoadPlan, run_load

from . import _cli, _report


@dataclass(frozen=True)
class Config:
    mode: str  # "onewriter" (workers send ops to the primary), "direct" or "naive"
    workers: int
    durability: str

    @property
    def label(self) -> str:
        return f"{self.mode} {self.workers}w {self.durability.upper()}"


CONFIGS = (
    Config("onewriter", 1, "normal"),
    Config("onewriter", 2, "normal"),
    Config("onewriter", 4, "normal"),
    Config("direct", 4, "normal"),
    Config("naive", 4, "normal"),
    Config("onewriter", 4, "full"),
    Config("direct", 4, "full"),
    Config("naive", 4, "full"),
)

NOTES = """Columns: `req/s` counts every answered request (reads and writes) over the
measured window; latencies are per request as the load client saw them (connect excluded:
connections are kept alive); `errors` are non-2xx answers with their codes; `rows` is what
the database holds afterwards and `lost` is acknowledged writes minus rows (never positive
when nothing is lost). The load client, the workers and (for onewriter) the writer share
the machine's cores, so more workers than cores adds contention rather than capacity. The
naive mode runs each write as `BEGIN IMMEDIATE` + the op + `COMMIT` on the worker's own
connection (one write in flight per worker) with `busy_timeout` 5 s; its errors are
`SQLITE_BUSY` after that timeout. onewriter workers send each write to the one writer,
which commits whatever is waiting as one batch; direct workers (`demo serve --direct`) run
each write themselves, on a thread, in a transaction of its own under the write turn."""


def run_config(config: Config, seconds: float, connections: int) -> dict[str, Any]:
    """Start the service for ``config``, load it, stop it; the figures."""
    with tempfile.TemporaryDirectory(prefix="ow-http-") as tmp:
        db = str(Path(tmp) / "bench.db")
        service = ServiceProcess(
            db,
            workers=config.workers,
            naive=config.mode == "naive",
            direct=config.mode == "direct",
            durability=config.durability,
        )
        with service:
            warm = LoadPlan(url=service.url, reads=100, writes=100, connections=connections)
            warmed = run_load(warm, progress=False, handle_signals=False)
            plan = LoadPlan(
                url=service.url,
                reads=1,
                writes=1,
                connections=connections,
                duration=seconds,
            )
            summary = run_load(plan, progress=False, handle_signals=False)
            stopped = service.stop()
        rows = _count(db)
    acked = summary["acknowledged_writes"] + warmed["acknowledged_writes"]
    return {
        "config": config,
        "summary": summary,
        "rows": rows,
        "lost": acked - rows,
        "exit": stopped,
    }


def _count(db: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM posts").fetchone()[0])
    finally:
        conn.close()


def _errors(summary: dict[str, Any]) -> str:
    if not summary["errors"]:
        return "0"
    return ", ".join(f"{e['count']:,} {e['code']}" for e in summary["errors"])


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        s = result["summary"]
        rows.append(
            [
                result["config"].label,
                s["total"]["throughput"],
                s["reads"]["latency_ms"]["p99"],
                s["writes"]["latency_ms"]["p50"],
                s["writes"]["latency_ms"]["p99"],
                s["total"]["latency_ms"]["max"],
                _errors(s),
                result["rows"],
                result["lost"],
            ]
        )
    headers = [
        "configuration",
        "req/s",
        "read p99 ms",
        "write p50 ms",
        "write p99 ms",
        "max ms",
        "errors",
        "rows",
        "lost",
    ]
    return format_table(headers, rows)


def _find(results: Sequence[dict[str, Any]], mode: str, workers: int, durability: str) -> Any:
    for result in results:
        c = result["config"]
        if (c.mode, c.workers, c.durability) == (mode, workers, durability):
            return result
    return None


def verdicts(results: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per durability and onewriter mode against naive at 4 workers."""
    out = []
    for durability in ("normal", "full"):
        naive = _find(results, "naive", 4, durability)
        for mode in ("onewriter", "direct"):
            ours = _find(results, mode, 4, durability)
            if ours is None or naive is None:
                continue
            a, b = ours["summary"], naive["summary"]
            ratio = a["total"]["throughput"] / max(b["total"]["throughput"], 1e-9)
            out.append(
                f"- {durability.upper()}, 4 workers, {mode} against naive: {ratio:.2f}x the "
                f"req/s ({a['total']['throughput']:,.0f} vs {b['total']['throughput']:,.0f}); "
                f"write p99 {a['writes']['latency_ms']['p99']:,.1f} vs "
                f"{b['writes']['latency_ms']['p99']:,.1f} ms; slowest request "
                f"{a['total']['latency_ms']['max']:,.0f} vs "
                f"{b['total']['latency_ms']['max']:,.0f} ms; errors {_errors(a)} vs {_errors(b)}."
            )
    ours_errors = sum(
        r["summary"]["total"]["errors"] for r in results if r["config"].mode != "naive"
    )
    out.append(f"- onewriter errors over all its configurations (both modes): {ours_errors:,}.")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _cli.parser("http", __doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per configuration")
    parser.add_argument("--seconds", type=float, help="load per configuration (default 20)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 20.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    results = []
    for index, config in enumerate(CONFIGS, 1):
        result = run_config(config, args.seconds, args.connections)
        s = result["summary"]
        print(
            f"[{index}/{len(CONFIGS)}] {config.label}: {s['total']['throughput']:,.0f} req/s, "
            f"write p99 {s['writes']['latency_ms']['p99']:,.1f} ms, errors {_errors(s)}, "
            f"lost {result['lost']}",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    body = "\n".join(
        [
            f"Mixed load, half reads and half writes, {args.connections} connections, "
            f"{args.seconds:g} s per configuration, no rate limit.\n",
            "```\n" + table(results) + "\n```\n",
            *verdicts(results),
            "",
            NOTES.replace("\n", " "),
        ]
    )
    print(body)
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)
    command = shlex.join(["python", "-m", "benchmarks.http", *(argv or sys.argv[1:])])
    if not args.no_write:
        _report.update_section("http", "HTTP: the demo service under load", command, body)


if __name__ == "__main__":
    main()
