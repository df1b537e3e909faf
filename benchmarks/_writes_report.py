"""Tables, targets and advice for ``benchmarks/writes.py``, all computed from one run."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onewriter.cli.tables import format_table

from ._writes_cells import LABELS, WORKLOADS, Cell

HEADERS = (
    "sync",
    "N",
    "way",
    "tx/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "errors",
    "acked",
    "stored",
    "lost",
    "writer",
    "batch p50",
)


def workload_table(cells: Sequence[Cell], workload: str) -> str:
    """One row per cell of ``workload``: durability, then processes, then way."""
    rows = []
    for cell in cells:
        if cell.workload != workload:
            continue
        rows.append(
            (
                cell.durability.upper(),
                cell.processes,
                LABELS[cell.way],
                round(cell.per_second),
                cell.latency(0.50) * 1000,
                cell.latency(0.99) * 1000,
                cell.latency(1.0) * 1000,
                cell.error_count,
                cell.acked,
                cell.stored,
                cell.lost,
                cell.writer,
                "-" if cell.batch_p50 is None else cell.batch_p50,
            )
        )
    return format_table(HEADERS, rows)


def error_lines(cells: Sequence[Cell]) -> list[str]:
    """Every error message seen, with its count and cell."""
    lines = []
    for cell in cells:
        for message, count in cell.errors.most_common():
            lines.append(
                f"{cell.durability.upper()} {cell.workload} N={cell.processes} "
                f"{LABELS[cell.way]}: {count:,} x {message}"
            )
    return lines


class _Lookup:
    """Cells of one run by (durability, workload, way) at one process count."""

    def __init__(self, cells: Sequence[Cell], processes: int) -> None:
        self.processes = processes
        self._cells: dict[tuple[str, str, str], Cell] = {
            (c.durability, c.workload, c.way): c for c in cells if c.processes == processes
        }

    def get(self, durability: str, workload: str, way: str) -> Cell | None:
        return self._cells.get((durability, workload, way))

    def onewriter(self) -> list[Cell]:
        return [c for c in self._cells.values() if c.onewriter]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def targets_table(cells: Sequence[Cell]) -> str:
    """The targets, beside what was measured: direct writes against naive at NORMAL for
    every process count run, the funnel at FULL and pipelined at N=8 (or the most run)."""
    n = 8 if any(c.processes == 8 for c in cells) else max(c.processes for c in cells)
    rows: list[tuple[str, str, str]] = []
    ours = [c for c in cells if c.onewriter]
    errors = sum(c.error_count for c in ours)
    rows.append(
        (
            "onewriter never errors",
            f"{errors:,} errors in {len(ours)} cells",
            _met(errors == 0 if ours else None),
        )
    )
    lost = [c for c in ours if c.lost != 0]
    rows.append(
        (
            "onewriter never loses an update",
            f"stored == acked in {len(ours) - len(lost)} of {len(ours)} cells",
            _met(not lost if ours else None),
        )
    )
    for processes in sorted({c.processes for c in cells}):
        at = _Lookup(cells, processes)
        for workload, naive in (("insert", "naive"), ("rmw", "naive-immediate")):
            rows.append(_ratio_row(at, "normal", workload, "direct", naive, 0.8))
            if processes > 1:
                rows.append(_slowest_row(at, workload, "direct", naive))
    at = _Lookup(cells, n)
    for workload, naive in (("insert", "naive"), ("rmw", "naive-immediate")):
        rows.append(_ratio_row(at, "full", workload, "sync", naive, 1.5))
        rows.append(_ratio_row(at, "full", workload, "async", naive, 10.0))
    return format_table(("target", "measured", "met"), rows)


def _slowest_row(at: _Lookup, workload: str, way: str, naive: str) -> tuple[str, str, str]:
    target = (
        f"NORMAL, {workload}, N={at.processes}: slowest {LABELS[way]} <= 1/5 of "
        f"{LABELS[naive]}'s slowest"
    )
    ours, theirs = at.get("normal", workload, way), at.get("normal", workload, naive)
    if ours is None or theirs is None:
        return target, "-", _met(None)
    mine, worst = ours.latency(1.0), theirs.latency(1.0)
    return target, f"{_ms(mine)} vs {_ms(worst)}", _met(mine <= worst / 5)


def _ratio_row(
    at: _Lookup, durability: str, workload: str, way: str, naive: str, factor: float
) -> tuple[str, str, str]:
    target = (
        f"{durability.upper()}, {workload}, N={at.processes}: {LABELS[way]} >= "
        f"{factor:g}x {LABELS[naive]}"
    )
    ours, theirs = at.get(durability, workload, way), at.get(durability, workload, naive)
    if ours is None or theirs is None or theirs.per_second == 0:
        return target, "-", _met(None)
    ratio = ours.per_second / theirs.per_second
    measured = f"{ratio:.2f}x ({ours.per_second:,.0f} vs {theirs.per_second:,.0f}/s)"
    return target, measured, _met(ratio >= factor)


#: The naive ways that are correct under contention (the others only look correct
#: with one process).
CORRECT_NAIVE = ("naive", "naive-immediate")


def naive_wins(cells: Sequence[Cell]) -> list[str]:
    """Cells where a correct naive way (and in this cell no error, nothing lost)
    out-wrote onewriter ways of the same workload, durability and process count."""
    wins = []
    for cell in cells:
        if cell.way not in CORRECT_NAIVE or cell.error_count or cell.lost:
            continue
        beaten = [
            f"{LABELS[other.way]} {other.per_second:,.0f}/s"
            for other in cells
            if other.onewriter
            and (other.durability, other.workload, other.processes)
            == (cell.durability, cell.workload, cell.processes)
            and cell.per_second > other.per_second
        ]
        if beaten:
            wins.append(
                f"{cell.durability.upper()}, {WORKLOADS[cell.workload]}, N={cell.processes}: "
                f"{LABELS[cell.way]} {cell.per_second:,.0f}/s against " + " and ".join(beaten)
            )
    return wins


def _worst(cells: Sequence[Cell], way: str, figure: Callable[[Cell], float]) -> Cell | None:
    chosen = [c for c in cells if c.way == way]
    return max(chosen, key=figure, default=None)


def _failed_share(cell: Cell) -> float:
    return cell.error_count / max(1, cell.acked + cell.error_count)


def advice(cells: Sequence[Cell]) -> str:
    """The "when to use which" paragraph, with this run's figures."""
    parts = []
    wins = naive_wins(cells)
    if wins:
        parts.append(
            "Where plain per-process connections were faster in this run (plain "
            "inserts or BEGIN IMMEDIATE, with no error and no lost update):\n\n"
            + "\n".join(f"- {win}" for win in wins)
        )
    else:
        parts.append("No correct naive way out-wrote onewriter in any cell of this run.")
    parts.append(
        "A direct write runs in the calling process, on its own connection, in a "
        "transaction of its own under the write turn: it pays the turn (a few "
        "microseconds) and no round trip, and processes queue on the turn in order "
        "instead of sleeping in SQLite's busy handler. The funnel (one-in-flight client "
        "or asyncio pipeline) pays a round trip per write and gains where one commit "
        "serves a batch: FULL, where the batch shares one fsync, and pipelined writers."
    )
    deferred = _worst(cells, "naive-deferred", _failed_share)
    implicit = _worst(cells, "naive-implicit", lambda c: c.lost)
    immediate = _worst(cells, "naive-immediate", lambda c: c.latency(1.0))
    rmw = []
    if implicit is not None and implicit.lost > 0:
        rmw.append(
            "Python's default transaction handling runs the SELECT outside the "
            f"transaction, so updates are lost ({implicit.lost:,} of {implicit.acked:,} "
            f"acknowledged at N={implicit.processes}, with {implicit.error_count:,} errors)"
        )
    if deferred is not None and deferred.error_count > 0:
        rmw.append(
            f"a plain BEGIN fails on the lock upgrade ({_failed_share(deferred):.1%} of "
            f"transactions at N={deferred.processes})"
        )
    if immediate is not None:
        rmw.append(
            f"BEGIN IMMEDIATE is correct but its slowest transaction waited "
            f"{_ms(immediate.latency(1.0))} (N={immediate.processes}) on the busy handler"
        )
    if rmw:
        parts.append("For read-modify-write: " + "; ".join(rmw) + ".")
    parts.append(
        'The default routing (`writes="auto"`) follows these tables: sync writes run '
        "directly at NORMAL and go to the writer at FULL; asyncio writes go to the writer. "
        "If you stay with plain connections, use BEGIN IMMEDIATE for every transaction "
        "that reads before writing."
    )
    return "\n\n".join(parts)


def workload_heading(workload: str) -> str:
    return WORKLOADS[workload][0].upper() + WORKLOADS[workload][1:]
