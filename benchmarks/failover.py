"""Failover: client processes write unique keys while the writer is SIGKILLed again and again.

The chaos test, run longer. Two ways to host the writer:

- ``auto``: every client is ``role=auto``; the writer is one of them. Each kill takes out
  a client process (its own in-flight writes are "in doubt": nobody is left to retry
  them); a fresh client replaces it and the survivors elect the next writer.
- ``serve``: clients are ``role=client``; the writer is an ``onewriter serve`` process,
  restarted at once after each kill. No client dies, so every write must be acknowledged.

A pause is the time from a kill to the first write committed by another writer.

    python -m benchmarks.failover                # 60 s and 20 kills in each mode
    python -m benchmarks.failover --quick        # 12 s and 5 kills in each mode
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import _cli, _report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos_client import ChaosRun, Mode, Outcome, percentile

TARGET = "Target: lost 0, duplicated 0, failover pause p99 under 500 ms."

NOTES = """Each mode runs 3 sync client processes and 2 asyncio ones (8 writes in flight
each), writing keys into a UNIQUE column through an op that returns the row id and the
writer's pid. `lost`: acknowledged keys missing from the database; `duplicated`: keys
applied twice (in the table twice, or refused by the UNIQUE constraint on a retry);
`unanswered`: attempted by a client that lived on and never answered; `in doubt`: the
killed client's own in-flight writes (auto mode: its process is gone, so nobody can retry
them; whether each was applied is counted, and none twice); `replayed`: acknowledgements
answered from the exactly-once record by the next writer after the writer that committed
them was killed. In serve mode the pause includes starting a new Python process."""


def run_mode(mode: Mode, seconds: float, kills: int) -> tuple[Outcome, float]:
    """One chaos run; returns its outcome and how long it wrote."""
    directory = Path(tempfile.mkdtemp(prefix="ow-failover-"))
    run = ChaosRun(directory, mode=mode, sync_clients=3, async_clients=2, tasks=8)
    try:
        run.start()
        started = time.monotonic()

        def progress(n: int, pid: int) -> None:
            print(f"  {mode}: kill {n}/{kills} (pid {pid})", file=sys.stderr, flush=True)

        run.kill_repeatedly(kills, seconds / (kills + 1), on_kill=progress)
        time.sleep(max(0.0, started + seconds - time.monotonic()))  # write out the window
        elapsed = time.monotonic() - started
        return run.stop(), elapsed
    finally:
        run.close()
        shutil.rmtree(directory, ignore_errors=True)


def table(rows: list[tuple[Mode, Outcome, float]]) -> str:
    head = (
        "| mode | kills | acknowledged | writes/s | lost | duplicated | unanswered "
        "| in doubt (applied) | replayed | pause p50 | pause p99 | pause max |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for mode, out, elapsed in rows:
        pauses = out.pauses_ms
        lines.append(
            f"| {mode} | {out.kills} | {out.acknowledged:,} | {out.acknowledged / elapsed:,.0f} "
            f"| {len(out.lost)} | {len(out.duplicated)} | {len(out.unacknowledged)} "
            f"| {len(out.in_doubt)} ({out.in_doubt_applied}) | {out.replayed} "
            f"| {percentile(pauses, 0.5):.0f} ms | {percentile(pauses, 0.99):.0f} ms "
            f"| {max(pauses, default=0):.0f} ms |"
        )
    return head + "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _cli.parser("failover", __doc__)
    parser.add_argument("--quick", action="store_true", help="12 s and 5 kills per mode")
    parser.add_argument("--seconds", type=float, help="writing time per mode (default 60)")
    parser.add_argument("--kills", type=int, help="SIGKILLs per mode (default 20)")
    parser.add_argument(
        "--modes", default="auto,serve", help="comma-separated: auto, serve (default both)"
    )
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (12.0 if args.quick else 60.0)
    args.kills = args.kills or (5 if args.quick else 20)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("auto", "serve") for m in args.modes):
        parser.error("--modes takes auto and/or serve")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[tuple[Mode, Outcome, float]] = []
    for mode in args.modes:
        print(f"{mode}: {args.seconds:.0f} s, {args.kills} kills", file=sys.stderr)
        out, elapsed = run_mode(mode, args.seconds, args.kills)
        print(f"  {out.summary()}", file=sys.stderr)
        rows.append((mode, out, elapsed))
    body = f"{TARGET}\n\n{table(rows)}\n\n{NOTES}"
    print(body)
    command = "python -m benchmarks.failover " + shlex.join(argv or sys.argv[1:])
    if not args.no_write:
        _report.update_section("failover", "Failover under repeated SIGKILL", command.strip(), body)
    broken = any(out.lost or out.duplicated or out.unacknowledged for _, out, _ in rows)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
