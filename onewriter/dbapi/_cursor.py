"""A DB-API cursor. Its rows are all fetched when the statement runs (no read
transaction lingers behind a half-read cursor); fetching hands them out."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import ProgrammingError
from ._readers import Description
from ._row import Row

if TYPE_CHECKING:
    from ._connection import Connection, Outcome


class Cursor:
    """Runs statements on its connection and hands out their rows."""

    arraysize: int = 1

    def __init__(self, connection: Connection) -> None:
        from ._connection import Connection

        if not isinstance(connection, Connection):
            raise TypeError(f"a Cursor needs a Connection, not {type(connection).__name__}")
        self._setup(connection)

    @classmethod
    def _of(cls, connection: Connection) -> Cursor:
        """A cursor made by its connection, which needs no checking."""
        cursor = cls.__new__(cls)
        cursor._setup(connection)
        return cursor

    def _setup(self, connection: Connection) -> None:
        self.connection = connection
        self.row_factory = connection.row_factory
        self.description: Description | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._next = 0
        self._closed = False

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        self._check_cursor()  # the connection checks itself when it runs the statement
        if not isinstance(sql, str):
            raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
        self._reset()
        self._take(self.connection._run(sql, parameters, many=False))
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        self._check_cursor()
        if not isinstance(sql, str):
            raise TypeError(f"executemany() argument 1 must be str, not {type(sql).__name__}")
        self._reset()
        outcome = self.connection._run(sql, iter(seq_of_parameters), many=True)
        self.rowcount = outcome.rowcount
        return self

    def executescript(self, sql_script: str) -> Cursor:
        self._check()
        if not isinstance(sql_script, str):
            raise TypeError(
                f"executescript() argument must be str, not {type(sql_script).__name__}"
            )
        if "\x00" in sql_script:
            raise ValueError("embedded null character")
        self._reset()
        self.connection._script(sql_script)
        return self

    def fetchone(self) -> Any:
        self._check()
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return self._make(row)

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._check()
        count = self.arraysize if size is None else size
        rows = self._rows[self._next : self._next + max(count, 0)]
        self._next += len(rows)
        return [self._make(row) for row in rows]

    def fetchall(self) -> list[Any]:
        self._check()
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return [self._make(row) for row in rows]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        if "connection" not in self.__dict__:
            raise ProgrammingError("Base Cursor.__init__ not called.")
        self.connection._check_thread()
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes: Any) -> None:
        """Accepted and ignored, as PEP 249 allows."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Accepted and ignored, as PEP 249 allows."""

    # -- internals ------------------------------------------------------------------------

    def _check_cursor(self) -> None:
        if "connection" not in self.__dict__:
            raise ProgrammingError("Base Cursor.__init__ not called.")
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")

    def _check(self) -> None:
        self._check_cursor()
        self.connection._check()

    def _reset(self) -> None:
        self.description = None
        self.rowcount = -1
        self._rows = []
        self._next = 0

    def _take(self, outcome: Outcome) -> None:
        self.description = outcome.description
        self._rows = outcome.rows
        self.rowcount = outcome.rowcount
        self.lastrowid = outcome.lastrowid

    def _make(self, values: tuple[Any, ...]) -> Any:
        text_factory = self.connection.text_factory
        if text_factory is not str:
            values = tuple(text_factory(v.encode()) if isinstance(v, str) else v for v in values)
        factory = self.row_factory
        if factory is None:
            return values
        if factory is sqlite3.Row:
            factory = Row  # the standard Row accepts only the standard module's cursor
        return factory(self, values)
