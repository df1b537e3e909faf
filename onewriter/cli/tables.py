"""Tables for the command line: aligned plain text, or rich tables on a terminal.

Plain text needs no dependency and is what a pipe, a file or ``--json`` gets; with the
``rich`` extra installed, a terminal gets rich's tables instead. Figures are formatted by
kind (``_tables`` knows pids, milliseconds, seconds, bytes and counts apart), the same way
in both.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ..extras import has_extra

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Table:
    """Headers, rows and, optionally, which columns are right-aligned (else: numbers)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    right: Sequence[bool] | None = None


#: What a report is made of: lines of text and tables, in order.
Block = str | Table


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None
) -> str:
    """Columns aligned: text to the left, numbers (or the ``right`` columns) to the right."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    aligned = right if right is not None else _numeric_columns(len(headers), rows)

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if aligned[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _numeric_columns(count: int, rows: Sequence[Sequence[Any]]) -> list[bool]:
    return [
        bool(rows) and all(_is_number(row[i]) for row in rows if i < len(row)) for i in range(count)
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def figure(name: str, value: Any) -> str:
    """One of the writer's figures as text, by what its name says it is."""
    leaf = name.rsplit(".", 1)[-1]
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not _is_number(value):
        return str(value)
    if leaf == "pid" or leaf.endswith("_pid"):
        return str(int(value))
    if name.endswith("_ms") or "_ms." in name:
        return f"{value:,.2f} ms"
    if leaf.endswith("_s"):
        return f"{value:,.1f} s" if value >= 10 else f"{value:,.3f} s"
    if leaf.endswith("_bytes"):
        return _size(int(value))
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _size(n: int) -> str:
    """Bytes in binary units, exact below 1 KiB."""
    if n < 1024:
        return f"{n:,} B"
    value, units = n / 1024, ["KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:,.1f} {units[0]}"


def stats_table(stats: dict[str, Any]) -> Table:
    """The writer's stats as a two-column table, nested figures spread out."""
    rows: list[tuple[str, str]] = []
    for key in sorted(stats):
        value = stats[key]
        if isinstance(value, dict):
            if not value:
                rows.append((key, "-"))
            for sub in sorted(value):
                name = f"{key}.{sub}"
                rows.append((name, figure(name, value[sub])))
        else:
            rows.append((key, figure(key, value)))
    return Table(["figure", "value"], rows, right=[False, True])


def rich_console(out: TextIO) -> Console | None:
    """A rich console on ``out`` when it is a terminal and rich is installed."""
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty() or not has_extra("rich"):
        return None
    from rich.console import Console

    return Console(file=out, highlight=False)


def print_blocks(
    blocks: Sequence[Block], out: TextIO | None = None, *, plain: bool = False
) -> None:
    """Lines and tables: rich's on a terminal (unless ``plain``), else aligned text."""
    stream = out or sys.stdout
    console = None if plain else rich_console(stream)
    if console is None:
        text = [
            b if isinstance(b, str) else format_table(b.headers, b.rows, b.right) for b in blocks
        ]
        print("\n".join(text), file=stream, flush=True)
        return
    from rich import box
    from rich.table import Table as RichTable

    for block in blocks:
        if isinstance(block, str):
            console.print(block, markup=False)
            continue
        right = block.right or _numeric_columns(len(block.headers), block.rows)
        table = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for header, is_right in zip(block.headers, right, strict=True):
            table.add_column(header, justify="right" if is_right else "left")
        for row in block.rows:
            table.add_row(*(_cell(v) for v in row))
        console.print(table)
    stream.flush()


def print_stats(stats: dict[str, Any], out: TextIO | None = None) -> None:
    """The writer's stats as a table (see :func:`print_blocks`)."""
    print_blocks([stats_table(stats)], out)
