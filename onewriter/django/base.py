"""``ENGINE: "onewriter.django"``: Django's sqlite3 backend with the write turn.

The connection is Django's own sqlite3 connection (its functions, aggregates, adapters
and ``detect_types``), set to WAL at connect. What changes is when writes run:

- ``atomic()`` takes the turn, then runs ``BEGIN IMMEDIATE`` (``BEGIN EXCLUSIVE`` with
  ``transaction_mode="EXCLUSIVE"``); the turn is given on when the transaction ends,
  by COMMIT, ROLLBACK, an error SQLite rolled back, or the connection closing;
- a write outside ``atomic()`` takes the turn for its one statement;
- reads take nothing and run in parallel with the writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from django.db.backends.sqlite3 import base as sqlite_base

from ..turn import Hold, TurnTimeout, WriteTurn, turn_for
from ._creation import DatabaseCreation
from ._cursor import TurnCursor
from ._errors import TransactionTimeout, WriteTurnTimeout
from ._options import TurnOptions

_T = TypeVar("_T")
log = logging.getLogger("onewriter.django")
#: Django 5.1 added ``transaction_mode`` and ``init_command`` to its sqlite3 backend.
_DJANGO_HAS_MODES = hasattr(sqlite_base.DatabaseWrapper, "transaction_modes")

GET_JOURNAL_MODE = "PRAGMA journal_mode"
SET_WAL = "PRAGMA journal_mode = WAL"
SYNCHRONOUS = {"normal": "PRAGMA synchronous = NORMAL", "full": "PRAGMA synchronous = FULL"}
TEMP_STORE_MEMORY = "PRAGMA temp_store = MEMORY"
JOURNAL_SIZE_LIMIT = "PRAGMA journal_size_limit = {:d}"  # an int, checked by TurnOptions


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    """Django's sqlite3 ``DatabaseWrapper`` whose writes hold the write turn."""

    creation_class = DatabaseCreation

    turn_options: TurnOptions
    init_commands: list[str]
    transaction_mode: str | None
    _hold_thread: int = 0
    _turn: WriteTurn | None = None
    _hold: Hold | None = None

    # -- connecting ---------------------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        self.turn_options = TurnOptions.pop_from(params)
        if not _DJANGO_HAS_MODES:  # Django < 5.1 knows neither option
            self.init_commands = params.pop("init_command", "").split(";")
            mode = params.pop("transaction_mode", None)
            self.transaction_mode = mode.upper() if mode else None
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        # The init_command runs after onewriter's pragmas, so a user's choice wins.
        init_commands, self.init_commands = self.init_commands, []
        try:
            conn: sqlite3.Connection = super().get_new_connection(conn_params)
        finally:
            self.init_commands = init_commands
        try:
            self._turn = None if self.is_in_memory_db() else turn_for(_file_of(conn_params))
            self._set_up(conn)
            for command in init_commands:
                if command := command.strip():
                    conn.execute(command)
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        opts = self.turn_options
        if self._turn is not None and conn.execute(GET_JOURNAL_MODE).fetchone()[0] != "wal":
            try:
                with self._turn.holding(opts.turn_timeout):
                    mode = conn.execute(SET_WAL).fetchone()[0]
            except TurnTimeout as exc:
                raise WriteTurnTimeout(exc.message) from None
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not switch the database to WAL ({mode})")
        conn.execute(SYNCHRONOUS[opts.durability])
        conn.execute(TEMP_STORE_MEMORY)
        conn.execute(JOURNAL_SIZE_LIMIT.format(opts.journal_size_limit))

    def create_cursor(self, name: str | None = None) -> Any:
        if self._turn is None:
            return super().create_cursor(name)
        cursor = self.connection.cursor(factory=TurnCursor)
        cursor.owner = self
        return cursor

    # -- transactions -------------------------------------------------------------------

    def _start_transaction_under_autocommit(self) -> None:
        if self.transaction_mode == "EXCLUSIVE" or self._turn is None:
            super()._start_transaction_under_autocommit()
        else:
            self.cursor().execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.check_overdue()
        try:
            super()._commit()
        except sqlite3.Error as exc:
            self.raise_if_overdue(exc)
            raise
        finally:
            self.settle()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self.settle()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._give_turn()

    # -- the turn (called by TurnCursor too) --------------------------------------------

    def take_turn(self) -> None:
        """Hold the turn until :meth:`settle` finds the transaction over."""
        if self._hold is not None or self._turn is None:
            return
        opts = self.turn_options
        try:
            self._hold = self._turn.acquire(
                opts.turn_timeout,
                limit=opts.transaction_timeout,
                interrupt=self.connection.interrupt,
            )
        except TurnTimeout as exc:
            raise WriteTurnTimeout(exc.message) from None
        self._hold_thread = threading.get_ident()

    def settle(self) -> None:
        """Give the turn on if the transaction it was taken for has ended."""
        if self._hold is not None and not (
            self.connection is not None and self.connection.in_transaction
        ):
            self._give_turn()

    def _give_turn(self) -> None:
        if self._hold is None or self._turn is None:
            return
        self._hold = None
        if self._hold_thread == threading.get_ident():
            self._turn.release()
        else:  # a robust mutex can only be given on by the thread that took it
            log.error(
                "a write transaction on %s ended on another thread than the one that "
                "began it; that thread keeps the write turn until it exits",
                self._turn.path,
            )

    def check_overdue(self) -> None:
        """Refuse to go on with a transaction that held the turn past its limit."""
        if self._hold is not None and self._hold.overdue:
            raise TransactionTimeout(self._overdue_message())

    def raise_if_overdue(self, exc: sqlite3.Error) -> None:
        """An ``interrupted`` error from the watchdog becomes a TransactionTimeout."""
        if self._hold is not None and self._hold.overdue:
            raise TransactionTimeout(self._overdue_message()) from exc

    def run(self, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)`` with an interruption by the watchdog reported as such."""
        try:
            return call(*args)
        except sqlite3.Error as exc:
            self.raise_if_overdue(exc)
            raise

    def _overdue_message(self) -> str:
        limit = self.turn_options.transaction_timeout
        return f"the transaction held the write turn for more than {limit} s"


def _file_of(conn_params: dict[str, Any]) -> str:
    """The absolute path of the database file ``sqlite3.connect`` opens (``NAME`` may be
    a ``file:`` URI, since Django connects with ``uri=True``)."""
    name = str(conn_params["database"])
    if name.startswith("file:"):
        name = unquote(urlsplit(name).path)
    return os.path.realpath(name)
