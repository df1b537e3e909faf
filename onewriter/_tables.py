"""Plain-text tables for the command line (no dependency, aligned columns)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned: text to the left, numbers to the right."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    numeric = [
        all(_is_number(row[i]) for row in rows if i < len(row)) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_stats(stats: dict[str, Any], out: TextIO | None = None) -> None:
    """The writer's stats as a two-column table, percentiles spread out."""
    rows: list[tuple[str, Any]] = []
    for key in sorted(stats):
        value = stats[key]
        if isinstance(value, dict):
            if not value:
                rows.append((key, "-"))
            for sub in sorted(value):
                rows.append((f"{key}.{sub}", value[sub]))
        else:
            rows.append((key, value))
    print(format_table(["figure", "value"], rows), file=out or sys.stdout, flush=True)
