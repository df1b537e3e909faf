"""onewriter.quote(v) is the literal SQLite's quote() writes, and reading it gives v back."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import onewriter

_NO_NUL_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1))
VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _NO_NUL_TEXT,
    st.binary(),
)


@pytest.fixture(scope="module")
def conn() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    try:
        yield connection
    finally:
        connection.close()


def sqlite_quote(conn: sqlite3.Connection, value: Any) -> str:
    return str(conn.execute("SELECT quote(?)", (value,)).fetchone()[0])


def read_back(conn: sqlite3.Connection, literal: str) -> Any:
    return conn.execute(f"SELECT {literal}").fetchone()[0]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (None, "NULL"),
        (0, "0"),
        (-(2**63), "-9223372036854775808"),
        (True, "1"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (100.0, "100.0"),
        (1e300, "1.0e+300"),
        (1e-5, "1.0e-05"),
        (-0.0, "0.0"),
        (float("nan"), "NULL"),
        ("", "''"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        (b"", "X''"),
        (b"\x00\xff\x10", "X'00FF10'"),
        (bytearray(b"ab"), "X'6162'"),
    ],
)
def test_known_literals_equal_sqlite(conn: sqlite3.Connection, value: Any, literal: str) -> None:
    assert onewriter.quote(value) == literal
    assert sqlite_quote(conn, value) == literal


def test_infinity_reads_back(conn: sqlite3.Connection) -> None:
    # SQLite before 3.43 writes "Inf", which it cannot read back; onewriter writes the
    # literal newer SQLite writes, which reads back as infinity everywhere.
    assert read_back(conn, onewriter.quote(float("inf"))) == math.inf
    assert read_back(conn, onewriter.quote(float("-inf"))) == -math.inf


def test_refusals() -> None:
    with pytest.raises(ValueError, match="NUL"):
        onewriter.quote("a\x00b")
    with pytest.raises(OverflowError):
        onewriter.quote(2**63)
    with pytest.raises(TypeError, match="list"):
        onewriter.quote([1])


#: SQLite 3.43 reads and writes reals exactly; older ones convert through long double.
EXACT_SQLITE = sqlite3.sqlite_version_info >= (3, 43, 0)


@settings(max_examples=400, deadline=None)
@given(VALUES)
@example(4.9858251354508e-308)  # SQLite 3.40 reads this 15-digit literal one unit off
def test_quote_matches_sqlite_and_reads_back(conn: sqlite3.Connection, value: Any) -> None:
    ours = onewriter.quote(value)
    theirs = sqlite_quote(conn, value)
    back = read_back(conn, ours)
    assert type(back) is type(value)
    if not isinstance(value, float) or EXACT_SQLITE:
        # The promise: SQLite's own quote(), read back exactly.
        assert ours == theirs
        assert back == value
        return
    # Before 3.43 (docs/dbapi.md): the literal names the value exactly, SQLite reads it
    # back within one unit in the last place, and its own quote() may pick the 20-digit
    # form (or other last digits) for a value it cannot read back from 15 digits.
    assert float(ours) == value
    assert abs(back - value) <= math.ulp(value)
    if ours != theirs:
        assert "e" in theirs, (ours, theirs)
        assert abs(float(theirs) - value) <= math.ulp(value), (ours, theirs)
