"""Where the microseconds of one direct write go, in one process (no contention).

Times (CPU time of the calling thread unless ``--clock wall``), interleaved in rounds so
that machine load hits every case alike, the median cost per call of: plain sqlite3
(autocommit insert; Python's default; ``BEGIN IMMEDIATE`` read-modify-write), the same
work through ``Database.write`` / ``Database.execute_write`` with ``writes="direct"``, and
the pieces a direct write is made of (the turn, ``BEGIN IMMEDIATE`` + ``COMMIT``).
``--profile`` prints a cProfile of the direct calls too.

    python -m benchmarks.direct_profile               # 7 rounds of 3,000 calls a case
    python -m benchmarks.direct_profile --profile
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import onewriter
from onewriter._checkpoint import BEGIN_SQL, COMMIT_SQL
from onewriter._turn import turn_for

from . import _writes_workloads as wl

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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.direct_profile")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="cProfile the direct calls")
    parser.add_argument("--clock", choices=tuple(_CLOCKS), default="cpu")
    args = parser.parse_args(argv)
    global _clock
    _clock = _CLOCKS[args.clock]
    with tempfile.TemporaryDirectory() as tmp:
        timed, close = cases(os.path.join(tmp, "profile.db"))
        try:
            for fn in timed.values():  # warm up: connections, migrations, caches
                _per_call(fn, 200)
            samples: dict[str, list[float]] = {name: [] for name in timed}
            for _ in range(args.rounds):
                for name, fn in timed.items():
                    samples[name].append(_per_call(fn, args.calls))
            base = statistics.median(samples["naive insert, autocommit"])
            rmw = statistics.median(samples["naive rmw, BEGIN IMMEDIATE"])
            print(f"{'case':<36} {'µs/call':>8} {'vs naive':>9}")
            for name, values in samples.items():
                us = statistics.median(values)
                ref = rmw if "rmw" in name or "balance" in name else base
                print(f"{name:<36} {us:>8.1f} {ref / us:>8.2f}x")
            if args.profile:
                for name in ("direct execute_write insert", "direct write(insert_item)"):
                    profile = cProfile.Profile()
                    profile.runcall(_per_call, timed[name], args.calls)
                    print(f"\n--- {name}, {args.calls} calls")
                    pstats.Stats(profile).sort_stats("tottime").print_stats(14)
        finally:
            close()


if __name__ == "__main__":
    main()
