"""Writes from many processes: naive per-process connections against onewriter.

Each cell starts N processes (spawn) on a fresh database, releases them together at a
barrier, lets each write until its deadline and merges what they measured. onewriter
cells first start one dedicated writer process (``role="writer"``); the workers connect
with ``role="auto"`` and either write directly under the write turn (``writes="direct"``)
or send their writes to that writer (``writes="funnel"``). Both sides use the same PRAGMAs (see
``_writes_workloads``).

    python -m benchmarks.writes                 # N=1,2,4,8, NORMAL and FULL, 3 s a cell
    python -m benchmarks.writes --quick         # N=1,8, 1 s a cell
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _cli, _report
from . import _writes_report as report
from ._writes_cells import LABELS, WAYS, WORKLOADS, Cell, run_cell, spawn_context
from ._writes_workloads import Durability

TARGETS = """Targets: onewriter never errors and never loses an update; at NORMAL a direct
write reaches at least 0.8x naive (plain inserts; BEGIN IMMEDIATE for read-modify-write) at
every process count, and from 2 processes on its slowest transaction is at most a fifth of
naive's slowest; at FULL, the funnel reaches at least 1.5x naive at one in flight and 10x
pipelined."""

NOTES = """Columns: tx/s counts acknowledged transactions over the window from the common start
to the end of the last transaction; latencies are those of acknowledged transactions; `stored`
is what the database holds afterwards (rows, or the final balance) and `lost` is
acked - stored (a lost update shows as a positive number). `writer`: onewriter cells run
a dedicated writer process started first (`role="writer"`), so they use N + 1 processes;
the N workers connect with `role="auto"`. `direct` ways run each write in the worker's
own process under the write turn (`writes="direct"`; asyncio on 4 threads), the others
send it to the writer (`writes="funnel"`). `batch p50` is the writer's median
group-commit size. Naive ways: each process has its own connection with the same PRAGMAs
(WAL, synchronous, cache_size, mmap_size, temp_store, busy_timeout 5 s); "Python default"
is `isolation_level` left at its default (the SELECT runs outside the transaction),
"BEGIN (deferred)" wraps the read and the write in a plain BEGIN."""


def _csv(
    kind: Callable[[str], Any], choices: Sequence[str] | None = None
) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if choices is not None and any(v not in choices for v in values):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _cli.parser("writes", __doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="duration of each cell (default 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N=1,8 and 1 s per cell, for a smoke run"
    )
    parser.add_argument(
        "--processes",
        type=_csv(int),
        default=None,
        help="process counts (default 1,2,4,8; 1,8 with --quick)",
    )
    parser.add_argument(
        "--sync",
        type=_csv(str.lower, ("normal", "full")),
        default=["normal", "full"],
        help="normal,full (default both)",
    )
    parser.add_argument(
        "--workloads",
        type=_csv(str, tuple(WORKLOADS)),
        default=list(WORKLOADS),
        help="insert,rmw (default both)",
    )
    parser.add_argument(
        "--ways",
        type=_csv(str),
        default=None,
        help="only these ways (default all; see LABELS in _writes_cells)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=32,
        help="writes in flight per process for the asyncio client",
    )
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 3.0
    if args.processes is None:
        args.processes = [1, 8] if args.quick else [1, 2, 4, 8]
    return args


def _progress(index: int, total: int, cell: Cell, took: float) -> None:
    errors = f"{cell.error_count:,} errors" if cell.errors else "no errors"
    print(
        f"[{index}/{total}] {cell.durability.upper()} {cell.workload} N={cell.processes} "
        f"{LABELS[cell.way]}: {cell.per_second:,.0f} tx/s, p99 "
        f"{cell.latency(0.99) * 1000:,.1f} ms, max {cell.latency(1.0) * 1000:,.1f} ms, "
        f"{errors}, lost {cell.lost:,} ({took:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> list[Cell]:
    ctx = spawn_context()
    plan: list[tuple[Durability, str, str, int]] = [
        (durability, workload, way, n)
        for durability in args.sync
        for workload in args.workloads
        for n in args.processes
        for way in WAYS[workload]
        if args.ways is None or way in args.ways
    ]
    cells = []
    for index, (durability, workload, way, n) in enumerate(plan, 1):
        began = time.perf_counter()
        cell = run_cell(ctx, durability, workload, way, n, args.seconds, args.in_flight)
        _progress(index, len(plan), cell, time.perf_counter() - began)
        cells.append(cell)
    return cells


def render(cells: Sequence[Cell], workloads: Sequence[str]) -> str:
    """The whole result as markdown: tables, errors, targets, advice."""
    out = []
    for workload in workloads:
        out.append(f"### {report.workload_heading(workload)}\n")
        out.append("```\n" + report.workload_table(cells, workload) + "\n```\n")
    errors = report.error_lines(cells)
    out.append("### Errors by message\n")
    out.append("```\n" + ("\n".join(errors) if errors else "none") + "\n```\n")
    out.append("### Targets\n")
    out.append(TARGETS.replace("\n", " ") + "\n")
    out.append("```\n" + report.targets_table(cells) + "\n```\n")
    out.append("### When to use which\n")
    out.append(report.advice(cells) + "\n")
    out.append("### How to read the tables\n")
    out.append(NOTES.replace("\n", " ") + "\n")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    cells = run(args)
    body = render(cells, args.workloads)
    print(body)
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)
    command = shlex.join(["python", "-m", "benchmarks.writes", *(argv or sys.argv[1:])])
    if not args.no_write:
        _report.update_section("writes", "Writes from many processes", command, body)


if __name__ == "__main__":
    main()
