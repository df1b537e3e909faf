"""One connection's share of the database's write turn.

A connection takes the turn before its first statement that writes (or at ``BEGIN``)
and gives it back as soon as it is no longer in a transaction, whichever way the
transaction ended: ``commit()``, ``rollback()``, ``COMMIT`` typed as SQL, a script, an
error SQLite rolled back, ``close()``. So two connections never write at once and SQLite
never answers ``database is locked``; a write transaction's reads see the latest
commit and nothing can commit under it (no lost update).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .. import fork as _fork
from ..turn import Hold, TurnTimeout, WriteTurn
from ._classify import BEGIN_IMMEDIATE, Kind, kind_of, known
from ._errors import TransactionTimeout, TurnBusy

log = logging.getLogger("onewriter.dbapi")

#: A statement runner: ``sqlite3.Cursor.execute`` or ``executemany``.
Runner = Callable[[sqlite3.Cursor, str, Any], Any]

_EXECUTEMANY = sqlite3.Cursor.executemany

#: Holds whose connection ended its transaction on another thread than the one that
#: took the turn (a robust mutex is given back by its owner): (turn, thread) -> count,
#: given back when that thread next takes the turn.
_stranded: dict[tuple[int, int], int] = {}
_stranded_lock = threading.Lock()


class Gate:
    """Takes and gives back the write turn for one connection."""

    __slots__ = ("_conn", "forks", "hold", "limit", "thread", "timeout", "turn")

    def __init__(
        self, conn: sqlite3.Connection, turn: WriteTurn, timeout: float, limit: float
    ) -> None:
        self._conn = weakref.ref(conn)
        self.turn = turn
        self.timeout = timeout
        self.limit = limit
        self.hold: Hold | None = None
        self.thread = 0
        self.forks = 0

    # -- statements ----------------------------------------------------------------

    def run(
        self,
        conn: sqlite3.Connection,
        cursor: sqlite3.Cursor,
        runner: Runner,
        sql: Any,
        params: Any,
        trace: Any,
    ) -> bool:
        """Run one statement, under the turn when it needs it. Returns whether the
        statement wrote outside a transaction and left rows to fetch: the caller must
        fetch them now (the statement commits when it finishes), then :meth:`settle`."""
        hold = self.hold
        if hold is not None:
            self.expire_if_overdue(conn)
            try:
                runner(cursor, sql, params)
            except sqlite3.OperationalError as exc:
                self._timed_out(conn, exc, hold)
                raise
            finally:
                self.settle(conn)
            return False
        if type(sql) is not str:
            runner(cursor, sql, params)  # the standard module's TypeError
            return False
        if runner is _EXECUTEMANY:
            kind = Kind.WRITE  # only DML may run many times: it writes
        else:
            kind = known.get(sql) or kind_of(conn, sql, params, trace)
        if kind is Kind.READ:
            runner(cursor, sql, params)
            return False
        hold = self.take()
        if kind is Kind.BEGIN:
            sql = BEGIN_IMMEDIATE
        try:
            runner(cursor, sql, params)
        except sqlite3.OperationalError as exc:
            self._timed_out(conn, exc, hold)
            self.settle(conn)
            raise
        except BaseException:
            self.settle(conn)
            raise
        if conn.in_transaction:
            return False
        if cursor.description is not None:
            return True  # the caller fetches the rows, then settles
        self.release()
        return False

    def script(self, conn: sqlite3.Connection, run: Callable[[], Any]) -> None:
        """Run a script under the turn (it may write anywhere in it)."""
        if self.hold is not None:
            self.expire_if_overdue(conn)
        hold = self.take()
        try:
            run()
        except sqlite3.OperationalError as exc:
            self._timed_out(conn, exc, hold)
            raise
        finally:
            self.settle(conn)

    # -- the turn ------------------------------------------------------------------

    def take(self) -> Hold:
        if self.hold is not None:
            return self.hold
        if _stranded:
            _give_back_stranded(self.turn)
        try:
            hold = self.turn.acquire(
                self.timeout, limit=self.limit or None, interrupt=self._interrupt
            )
        except TurnTimeout as exc:
            raise TurnBusy(f"database is locked: {exc.message}") from None
        self.hold = hold
        self.thread = threading.get_ident()
        self.forks = _fork.generation()
        return hold

    def settle(self, conn: sqlite3.Connection) -> None:
        """Give the turn back if the connection is no longer in a transaction."""
        if self.hold is None:
            return
        try:
            open_transaction = conn.in_transaction
        except sqlite3.ProgrammingError:  # closed
            open_transaction = False
        if not open_transaction:
            self.release()

    def release(self) -> None:
        hold, self.hold = self.hold, None
        if hold is None or self.forks != _fork.generation():
            return  # nothing held, or the parent's hold (a forked child holds nothing)
        if self.thread == threading.get_ident():
            self.turn.release()
            return
        log.warning(
            "a transaction ended on another thread than the one that began it; the write "
            "turn of %s goes back when that thread next writes",
            self.turn.path,
        )
        with _stranded_lock:
            key = (id(self.turn), self.thread)
            _stranded[key] = _stranded.get(key, 0) + 1

    # -- transaction_timeout -------------------------------------------------------

    def expire_if_overdue(self, conn: sqlite3.Connection) -> None:
        """Roll back a transaction that held the turn past ``transaction_timeout``."""
        hold = self.hold
        if hold is not None and hold.overdue:
            self._roll_back(conn)
            raise TransactionTimeout(self._timeout_message())

    def _timed_out(
        self, conn: sqlite3.Connection, exc: sqlite3.OperationalError, hold: Hold
    ) -> None:
        """A statement the watchdog interrupted: roll back, raise the timeout instead."""
        if hold.overdue and "interrupt" in str(exc):
            self._roll_back(conn)
            raise TransactionTimeout(self._timeout_message()) from exc

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        try:
            with contextlib.suppress(sqlite3.Error):
                sqlite3.Connection.rollback(conn)
        finally:
            self.release()

    def _timeout_message(self) -> str:
        return (
            "transaction rolled back: it held the write turn longer than "
            f"transaction_timeout ({self.limit:g} s)"
        )

    def _interrupt(self) -> None:
        """Called by the turn's watchdog past ``transaction_timeout``."""
        conn = self._conn()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.interrupt()


def _give_back_stranded(turn: WriteTurn) -> None:
    key = (id(turn), threading.get_ident())
    with _stranded_lock:
        count = _stranded.pop(key, 0)
    for _ in range(count):
        turn.release()
