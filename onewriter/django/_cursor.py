"""The cursor that takes the write turn for statements run outside a transaction.

Inside a transaction the turn is already held (it was taken at ``BEGIN``) and the
cursor only looks whether the statement ended it. Outside one, a write takes the turn
for that one statement: it autocommits, and its ``RETURNING`` rows are read at once so
the statement (and so SQLite's write lock) is finished before the turn is given on.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.db.backends.sqlite3.base import SQLiteCursorWrapper

from ._statements import immediate_begin, is_read

if TYPE_CHECKING:
    from .base import DatabaseWrapper


class TurnCursor(SQLiteCursorWrapper):
    """Django's sqlite3 cursor, run through the write turn of its database."""

    owner: DatabaseWrapper
    _rows: deque[Any] | None = None

    def execute(self, query: str, params: Any = None) -> Any:
        self._rows = None
        owner = self.owner
        if self.connection.in_transaction:
            owner.check_overdue()
            try:
                return owner.run(super().execute, query, params)
            finally:
                owner.settle()
        if is_read(query):
            return super().execute(query, params)
        owner.take_turn()
        try:
            super().execute(immediate_begin(query), params)
            if self.description is not None and not self.connection.in_transaction:
                self._rows = deque(super().fetchall())
            return self
        except sqlite3.Error as exc:
            owner.raise_if_overdue(exc)
            raise
        finally:
            owner.settle()

    def executemany(self, query: str, param_list: Iterable[Sequence[Any]]) -> Any:
        self._rows = None
        owner = self.owner
        if self.connection.in_transaction:
            owner.check_overdue()
        elif not is_read(query):
            owner.take_turn()
        try:
            return owner.run(super().executemany, query, param_list)
        finally:
            owner.settle()

    def executescript(self, sql_script: str) -> Any:
        self._rows = None
        # sqlite3 commits any open transaction first, then runs the script as written.
        self.owner.take_turn()
        try:
            return super().executescript(sql_script)
        finally:
            self.owner.settle()

    # -- rows of an autocommit write, read before the turn was given on ---------------

    def fetchone(self) -> Any:
        if self._rows is None:
            return super().fetchone()
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        if self._rows is None:
            rows: list[Any] = super().fetchmany(self.arraysize if size is None else size)
            return rows
        count = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(count, len(self._rows)))]

    def fetchall(self) -> list[Any]:
        if self._rows is None:
            every: list[Any] = super().fetchall()
            return every
        rows, self._rows = list(self._rows), deque()
        return rows

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._rows is None:
            return super().__next__()
        if not self._rows:
            raise StopIteration
        return self._rows.popleft()
