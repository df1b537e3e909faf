"""Where the microseconds of one direct write go, in one process (no contention).

Times (CPU time of the calling thread unless ``--clock wall``), interleaved in rounds so
that machine load hits every case alike, the median cost per call of: plain sqlite3
(autocommit insert; Python's default; ``BEGIN IMMEDIATE`` read-modify-write), the same
work through ``Database.write`` / ``Database.execute_write`` with ``writes="direct"``, and
the pieces a direct write is made of (the turn, ``BEGIN IMMEDIATE`` + ``COMMIT``).
``--profile`` prints a cProfile of the direct calls too.

    python -m benchmarks.direct_profile               # 7 rounds of 3,000 calls a case
    python -m benchmarks.direct_profile --profile
    python -m benchmarks.direct_profile --before REV  # both versions; writes benchmarks.md
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onewriter
from onewriter.cli.tables import format_table
from onewriter.sqlite.upkeep import BEGIN_SQL, COMMIT_SQL
from onewriter.turn import turn_for

from . import _cli, _report
from . import _writes_workloads as wl
from ._before_after import ROOT, export

#: CPU time of this thread by default: on a shared machine, wall time mostly measures
#: who else was running.
_CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
_clock = time.thread_time


def _per_call(fn: Callable[[], object], calls: int) -> float:
    began = _clock()
    for _ in range(calls):
        fn()
    return (_clock() - began) / calls * 1e6


def cases(path: str) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    """The timed calls, and what closes what they opened."""
    wl.prepare(path, "normal")
    auto = wl.naive_connection(path, "normal", explicit_transactions=True)
    default = wl.naive_connection(path, "normal", explicit_transactions=False)
    db = onewriter.connect(path, ops=wl.ops, writes="direct", role="standalone")
    turn = turn_for(db.path)
    bare = wl.naive_connection(path, "normal", explicit_transactions=True)
    args = (0, wl.PAYLOAD)

    def turn_only() -> None:
        turn.acquire(5.0, limit=5.0)
        turn.release()

    def begin_commit() -> None:
        bare.execute(BEGIN_SQL)
        bare.execute(COMMIT_SQL)

    def close() -> None:
        db.close()
        for conn in (auto, default, bare):
            conn.close()

    timed: dict[str, Callable[[], object]] = {
        "naive insert, autocommit": lambda: auto.execute(wl.INSERT_ITEM, args),
        "naive insert, Python default": lambda: wl.naive_insert(default, 0),
        "direct execute_write insert": lambda: db.execute_write(wl.INSERT_ITEM, args),
        "direct write(insert_item)": lambda: db.write(wl.insert_item, process=0),
        "naive rmw, BEGIN IMMEDIATE": lambda: wl.naive_rmw_immediate(auto, 0),
        "direct write(increment_balance)": lambda: db.write(wl.increment_balance, process=0),
        "turn take + give (piece)": turn_only,
        "BEGIN IMMEDIATE + COMMIT (piece)": begin_commit,
    }
    return timed, close


def measure(rounds: int, calls: int) -> dict[str, float]:
    """Median µs per call of every case, in a database of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        timed, close = cases(os.path.join(tmp, "profile.db"))
        try:
            for fn in timed.values():  # warm up: connections, migrations, caches
                _per_call(fn, 200)
            samples: dict[str, list[float]] = {name: [] for name in timed}
            for _ in range(rounds):
                for name, fn in timed.items():
                    samples[name].append(_per_call(fn, calls))
        finally:
            close()
    return {name: statistics.median(values) for name, values in samples.items()}


def _reference(name: str) -> str:
    if "rmw" in name or "balance" in name:
        return "naive rmw, BEGIN IMMEDIATE"
    if "write(" in name:
        return "naive insert, Python default"
    return "naive insert, autocommit"


def table(columns: dict[str, dict[str, float]]) -> str:
    """µs per call, and each direct case against the plain sqlite3 it stands for."""
    headers = ["case"]
    for label in columns:
        headers += [f"{label} µs", f"{label} vs plain"]
    rows = []
    for name in next(iter(columns.values())):
        row: list[Any] = [name]
        for figures in columns.values():
            us = figures[name]
            plain = ""
            if not ("piece" in name or name.startswith("naive")):
                plain = f"{figures[_reference(name)] / us:.2f}x"
            row += [f"{us:.1f}", plain]
        rows.append(row)
    return format_table(headers, rows)


def _in_tree(tree: Path, rounds: int, calls: int, clock: str) -> dict[str, float]:
    """``measure`` run by the onewriter of ``tree`` (this module and its parser copied
    into it)."""
    if tree != ROOT:
        for module in (Path(__file__), Path(_cli.__file__)):
            shutil.copy(module, tree / "benchmarks" / module.name)
    sizes = ["--rounds", str(rounds), "--calls", str(calls)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.direct_profile", "--json", "--clock", clock, *sizes],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def before_after(
    rev: str, rounds: int, calls: int, clock: str, argv: Sequence[str], write: bool
) -> None:
    """Both versions, one process each per round, rounds interleaved; into benchmarks.md
    if ``write``."""
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ow-before-") as tmp:
        trees = {"before": export(rev, Path(tmp)), "after": ROOT}
        for _ in range(rounds):
            for label, tree in trees.items():
                runs[label].append(_in_tree(tree, 3, calls, clock))
    columns = {
        label: {name: statistics.median(r[name] for r in figures) for name in figures[0]}
        for label, figures in runs.items()
    }
    body = (
        f"One process, no contention: median µs per call ({clock} time of the calling "
        f"thread) over {rounds} interleaved rounds of 3 x {calls:,} calls, each round a fresh "
        f"process per version; before = `{rev}`; load average {load:.1f} when it started. "
        "`vs plain`: the plain sqlite3 call it stands for (autocommit for execute_write, "
        "Python's default for an insert op, BEGIN IMMEDIATE for read-modify-write) divided "
        "by the direct call: 1.00x is as fast.\n\n```\n" + table(columns) + "\n```\n"
    )
    print(body)
    command = shlex.join(["python", "-m", "benchmarks.direct_profile", *argv])
    if write:
        _report.update_section(
            "direct-profile", "Direct writes: one call, where it goes", command, body
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = _cli.parser("direct_profile", __doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="cProfile the direct calls")
    parser.add_argument("--clock", choices=tuple(_CLOCKS), default="cpu")
    parser.add_argument("--before", help="an earlier commit to compare with (writes the doc)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global _clock
    _clock = _CLOCKS[args.clock]
    if args.before:
        given = list(argv if argv is not None else sys.argv[1:])
        before_after(args.before, args.rounds, args.calls, args.clock, given, not args.no_write)
        return
    figures = measure(args.rounds, args.calls)
    if args.json:
        print(json.dumps(figures))
        return
    print(table({"now": figures}))
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            timed, close = cases(os.path.join(tmp, "profile.db"))
            try:
                for name in ("direct execute_write insert", "direct write(insert_item)"):
                    _per_call(timed[name], 200)
                    profile = cProfile.Profile()
                    profile.runcall(_per_call, timed[name], args.calls)
                    print(f"\n--- {name}, {args.calls} calls")
                    pstats.Stats(profile).sort_stats("tottime").print_stats(14)
            finally:
                close()


if __name__ == "__main__":
    main()
