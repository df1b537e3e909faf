"""Which statements need the write turn, told before they run.

SQLite knows whether a prepared statement writes (``sqlite3_stmt_readonly``); the
standard module does not expose it, but ``EXPLAIN`` shows the same facts: the program of
a statement that writes opens a write transaction (``Transaction`` with P2 ≠ 0) or
checkpoints, vacuums or switches the journal; ``BEGIN`` is an ``AutoCommit`` that
leaves autocommit, ``SAVEPOINT`` a ``Savepoint`` that opens one. The answer depends on
the statement's text alone, so it is worked out once per text and kept.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any


class Kind(enum.Enum):
    READ = "read"
    WRITE = "write"
    """Writes (or may write) a database: runs under the turn."""
    BEGIN = "begin"
    """``BEGIN`` (DEFERRED): takes the turn and runs as ``BEGIN IMMEDIATE``."""
    BEGIN_LOCKING = "begin_locking"
    """``BEGIN IMMEDIATE``/``EXCLUSIVE``: takes the turn, runs as written."""
    SAVEPOINT = "savepoint"
    """Outside a transaction, ``SAVEPOINT`` opens one: it takes the turn."""


BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
_EXPLAIN = "EXPLAIN "
_WRITING_OPCODES = frozenset({"Checkpoint", "Vacuum", "JournalMode", "VUpdate", "VBegin"})
#: Texts classified at most; past it the cache starts afresh (statements built with
#: values in their text would otherwise grow it without end).
_CACHE_LIMIT = 4096

#: Named parameters, all NULL.
_NULLS_BY_NAME: defaultdict[str, None] = defaultdict(lambda: None)

#: Statement text -> its kind (read lock-free by the gate on every statement).
known: dict[str, Kind] = {}
_known_lock = threading.Lock()


def kind_of(conn: sqlite3.Connection, sql: str, params: Any, trace: Any = None) -> Kind:
    """The kind of ``sql`` (run with ``params``) on ``conn``: from the cache, or from its
    ``EXPLAIN`` (hidden from the application's trace callback ``trace``)."""
    kind = known.get(sql)
    if kind is not None:
        return kind
    if trace is None:
        program = _explain(conn, sql, params)
    else:
        sqlite3.Connection.set_trace_callback(conn, None)
        try:
            program = _explain(conn, sql, params)
        finally:
            sqlite3.Connection.set_trace_callback(conn, trace)
    if program is None:
        return Kind.WRITE  # it did not prepare: it fails when run; safe either way
    kind = _kind_of_program(program)
    with _known_lock:
        if len(known) >= _CACHE_LIMIT:
            known.clear()
        known[sql] = kind
    return kind


def _explain(conn: sqlite3.Connection, sql: str, params: Any) -> list[tuple[Any, ...]] | None:
    """The program of ``sql``, read on ``conn`` itself (its TEMP schema, attached
    databases and functions count) without the application's factories. NULLs stand
    in for the parameters: the program does not depend on their values, and the
    application's adapters are not called twice."""
    if isinstance(params, Mapping):
        nulls: Any = _NULLS_BY_NAME
    else:
        try:
            nulls = (None,) * len(params)
        except TypeError:
            nulls = ()
    text_factory = conn.text_factory
    conn.text_factory = str
    try:
        cursor = sqlite3.Cursor(conn)
        cursor.row_factory = None
        try:
            return sqlite3.Cursor.execute(cursor, _EXPLAIN + sql, nulls).fetchall()
        finally:
            cursor.close()
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
        return None
    finally:
        conn.text_factory = text_factory


def _kind_of_program(program: list[tuple[Any, ...]]) -> Kind:
    writes = begins = savepoint = False
    for row in program:
        opcode, p1, p2 = row[1], row[2], row[3]
        if opcode == "Transaction":
            writes = writes or p2 != 0
        elif opcode == "AutoCommit":
            begins = begins or p1 == 0
        elif opcode == "Savepoint":
            savepoint = savepoint or p1 == 0
        elif opcode in _WRITING_OPCODES:
            writes = True
    if begins:
        return Kind.BEGIN_LOCKING if writes else Kind.BEGIN
    if savepoint:
        return Kind.SAVEPOINT
    return Kind.WRITE if writes else Kind.READ
