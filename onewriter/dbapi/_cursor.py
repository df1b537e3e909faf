"""The cursor: the standard module's own, with its statements run through the gate.

A statement that writes outside a transaction and returns rows (``INSERT ...
RETURNING`` with ``isolation_level=None``) commits only when its last row is fetched;
its rows are fetched at once so that the turn goes back, and the cursor hands them out
from a list (it changes to a buffered variant of its class until its next statement).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ._classify import Kind, known

_buffered_classes: dict[type[Any], type[Any]] = {}
_execute = sqlite3.Cursor.execute
READ = Kind.READ


class Cursor(sqlite3.Cursor):
    """A ``sqlite3.Cursor`` whose writes take the database's write turn."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        conn: Any = self.connection
        gate = getattr(conn, "_gate", None)
        if gate is None or (gate.hold is None and known.get(sql) is READ):
            _execute(self, sql, parameters)  # the common case: a read, nothing held
        elif gate.run(conn, self, _execute, sql, parameters, conn._trace):
            try:
                _buffer(self)
            finally:
                gate.settle(conn)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Cursor:
        conn: Any = self.connection
        gate = getattr(conn, "_gate", None)
        if gate is None:
            sqlite3.Cursor.executemany(self, sql, seq_of_parameters)
        else:
            gate.run(conn, self, sqlite3.Cursor.executemany, sql, seq_of_parameters, conn._trace)
        return self

    def executescript(self, sql_script: str, /) -> Cursor:
        conn: Any = self.connection
        gate = getattr(conn, "_gate", None)
        if gate is None:
            sqlite3.Cursor.executescript(self, sql_script)
        else:
            gate.script(conn, lambda: sqlite3.Cursor.executescript(self, sql_script))
        return self


class _Buffered:
    """Hands out rows fetched in advance; the standard cursor's checks still run (its
    own fetch finds nothing left and checks the thread and the closed state)."""

    __slots__ = ()
    _rows: list[Any]
    _plain: type[Any]

    def fetchone(self) -> Any:
        sqlite3.Cursor.fetchone(self)  # type: ignore[arg-type]
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        sqlite3.Cursor.fetchone(self)  # type: ignore[arg-type]
        count = self.arraysize if size is None else size  # type: ignore[attr-defined]
        taken = self._rows[:count]
        del self._rows[:count]
        return taken

    def fetchall(self) -> list[Any]:
        sqlite3.Cursor.fetchone(self)  # type: ignore[arg-type]
        taken = self._rows[:]
        self._rows.clear()
        return taken

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        sqlite3.Cursor.fetchone(self)  # type: ignore[arg-type]
        if not self._rows:
            raise StopIteration
        return self._rows.pop(0)

    def execute(self, *args: Any) -> Any:
        _unbuffer(self)
        return self.execute(*args)

    def executemany(self, *args: Any) -> Any:
        _unbuffer(self)
        return self.executemany(*args)

    def executescript(self, *args: Any) -> Any:
        _unbuffer(self)
        return self.executescript(*args)


def _buffer(cursor: Cursor) -> None:
    rows = sqlite3.Cursor.fetchall(cursor)
    cls = type(cursor)
    buffered = _buffered_classes.get(cls)
    if buffered is None:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "_plain": cls}
        buffered = _buffered_classes[cls] = type(cls.__name__, (_Buffered, cls), namespace)
    cursor.__class__ = buffered
    cursor._rows = rows  # type: ignore[attr-defined]


def _unbuffer(cursor: Any) -> None:
    del cursor._rows
    cursor.__class__ = cursor._plain
