"""SQL literals, as SQLite's own ``quote()`` function writes them.

For the rare text that must be built rather than parameterised (a DDL default, a
generated script, a log of what ran). Parameters are always the better choice: they
cannot be mistaken for SQL.
"""

from __future__ import annotations

import math
from typing import Any

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def quote(value: Any) -> str:
    """The SQL literal for ``value``: ``NULL``, an integer, a real, ``'text'`` (quotes
    doubled) or ``X'blob'``. A real's literal names it exactly; SQLite 3.43 and later
    write the same literal in ``quote()`` and read it back exactly, older SQLite reads
    some reals back one unit in the last place off (docs/dbapi.md).

    Raises ``TypeError`` for a type SQLite cannot store, ``OverflowError`` for an
    integer outside 64 bits and ``ValueError`` for text holding a NUL character (SQL
    text cannot carry one; SQLite's ``quote()`` would cut the text there).
    """
    if value is None:
        return "NULL"
    if isinstance(value, int):
        number = int(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise OverflowError(f"{number} does not fit in SQLite's 64-bit INTEGER")
        return str(number)
    if isinstance(value, float):
        return _real(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text with a NUL character cannot be written as an SQL literal")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes | bytearray | memoryview):
        return "X'" + bytes(value).hex().upper() + "'"
    raise TypeError(f"SQLite cannot store a value of type {type(value).__name__}")


def _real(value: float) -> str:
    """SQLite's ``%!.15g``, or ``%!.20e`` when 15 digits do not give the value back.

    The digits of the long form are the value's exact decimal expansion; SQLite before
    3.43 computes them in long double and differs past the 16th, naming the same number.
    """
    if math.isnan(value):
        return "NULL"  # SQLite stores NaN as NULL
    if math.isinf(value):
        # What newer SQLite writes; one that writes "Inf" cannot read its own literal back.
        return "9.0e+999" if value > 0 else "-9.0e+999"
    if value == 0:
        return "0.0"  # SQLite drops the sign of a negative zero
    short = _with_point(f"{value:.15g}")
    if float(short) == value:
        return short
    return _with_point(f"{value:.20e}", trim=True)


def _with_point(text: str, *, trim: bool = False) -> str:
    """SQLite's ``!`` flag: a decimal point always has a digit after it, and with
    ``trim`` trailing zeros of the mantissa go."""
    mantissa, marker, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    elif trim:
        mantissa = mantissa.rstrip("0")
        if mantissa.endswith("."):
            mantissa += "0"
    return mantissa + marker + exponent
