"""What showing progress costs the load client: the same load on the demo service with
no progress, the plain progress line and rich's progress bar (on a pseudo-terminal).

The three run in turn, several rounds, against one service; the figure is the load
client's request rate in each, and its ratio to the run without progress.

    python -m benchmarks.load_progress            # 6 rounds of 5 s a mode
    python -m benchmarks.load_progress --quick    # 1 round of 2 s, for a smoke run
"""

from __future__ import annotations

import contextlib
import os
import pty
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from onewriter.cli.progress import LiveProgress
from onewriter.cli.tables import format_table
from onewriter.demo.launch import ServiceProcess
from onewriter.load import LoadPlan, run_load

from . import _cli, _report

MODES = ("none", "plain", "rich")


@contextlib.contextmanager
def terminal() -> Iterator[TextIO]:
    """A pseudo-terminal to draw on, drained by a thread (what a real terminal does)."""
    controller, device = pty.openpty()
    out = os.fdopen(device, "w")

    def drain() -> None:
        with contextlib.suppress(OSError):
            while os.read(controller, 65536):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield out
    finally:
        out.close()
        reader.join(5)
        os.close(controller)


def one_run(url: str, mode: str, seconds: float, screen: TextIO) -> float:
    """The request rate of one run; ``plain`` also draws on the terminal, a line at a time."""
    plan = LoadPlan(url=url, reads=1, writes=1, connections=16, duration=seconds)
    summary = run_load(
        plan,
        progress=mode != "none",
        plain=mode == "plain",
        progress_out=screen,
        handle_signals=False,
    )
    return float(summary["total"]["throughput"])


def update_cost(mode: str, screen: TextIO, count: int = 2000) -> float:
    """Seconds of CPU one progress update takes (what the load client pays 4 times a second)."""
    shown = LiveProgress("load", float(count), out=screen, plain=mode == "plain")
    started = time.process_time()
    for i in range(count):
        shown.update(i, f"{i:5.1f} s  {i:,} requests  {i:,.0f} req/s  0 errors")
    cost = (time.process_time() - started) / count
    shown.close()
    return cost


def main(argv: Sequence[str] | None = None) -> int:
    parser = _cli.parser("load_progress", __doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 2.0) if args.quick else (6, 5.0)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="ow-bench-") as scratch, terminal() as screen:
        database = str(Path(scratch) / "demo.db")
        with ServiceProcess(database, workers=1) as service:
            one_run(service.url, "none", 1.0, screen)  # warm-up
            for round_ in range(rounds):
                order = MODES[round_ % 3 :] + MODES[: round_ % 3]  # none goes first only once
                for mode in order:
                    rates[mode].append(one_run(service.url, mode, seconds, screen))
        costs = {mode: update_cost(mode, screen) for mode in MODES[1:]}
    base = statistics.median(rates["none"])
    rows = [
        [
            mode,
            round(statistics.median(r), 1),
            round(statistics.median(r) / base, 3),
            f"{costs[mode] * 1e6:,.0f}" if mode in costs else "-",
            f"{costs[mode] * 4 * 100:.3f}" if mode in costs else "-",
        ]
        for mode, r in rates.items()
    ]
    headers = ["progress", "req/s (median)", "vs none", "µs CPU per update", "% of a core"]
    table = format_table(headers, rows)
    print(table)
    print("each run:", {mode: [round(r) for r in r_] for mode, r_ in rates.items()})
    if not args.quick and not args.no_write:
        runs = {mode: [round(x) for x in r] for mode, r in rates.items()}
        body = (
            f"{rounds} rounds of {seconds:g} s a mode, in turn, 16 connections, one demo worker; "
            "`plain` and `rich` draw on a pseudo-terminal. `µs CPU per update` is measured "
            "apart (2,000 updates in a row); the load client updates 4 times a second, "
            "which is the `% of a core` column.\n\n```\n" + table + "\n```\n\n"
            f"Each run's req/s: {runs}. On this shared machine the runs of one mode differ "
            "by up to a factor of 2, so the req/s medians do not separate the modes; "
            "the CPU cost per update bounds what progress can take from the load client.\n"
        )
        _report.update_section(
            "load-progress",
            "The load client's progress display",
            "python -m benchmarks.load_progress",
            body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
