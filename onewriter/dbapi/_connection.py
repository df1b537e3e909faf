"""A DB-API connection: the standard module's behaviour over onewriter.

Outside a transaction a read runs on this process's readers and a write goes to the
writer, where it commits on its own (in a group commit with other clients' writes).
Inside a transaction, opened before DML as the standard module does or by an explicit
BEGIN, every statement runs on the writer in one open write transaction (see
``onewriter._txn``), so the connection reads its own uncommitted writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .._client import SyncChannel
from .._config import Config
from .._database import Database
from .._errors import ClientTimeout, CommitFailed, DeadlineExceeded, OneWriterError
from .._ops import Ops
from . import _errors as errors
from ._errors import NotSupportedError, OperationalError, ProgrammingError
from ._params import for_writer, many_for_writer
from ._readers import Description
from ._shared import open_shared
from ._statements import UNSUPPORTED_METHODS, Kind, Statement, classify, split_script

log = logging.getLogger("onewriter.dbapi")

_ISOLATION_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
_SQLITE_READONLY = 8
#: Statements a reader refused as writes; they go straight to the writer next time.
_KNOWN_WRITES: set[str] = set()
_KNOWN_WRITES_LIMIT = 1024


class _Unanswered:
    """Where the reply to a message nobody waits for goes."""

    def deliver(self, request: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _new_cursor(connection: Connection) -> Cursor:
    return Cursor._of(connection)


def _describe(columns: list[str] | None) -> Description | None:
    if columns is None:
        return None
    return tuple((name, None, None, None, None, None, None) for name in columns)


class Outcome:
    """What one statement produced, for a cursor."""

    __slots__ = ("description", "lastrowid", "rowcount", "rows")

    def __init__(
        self,
        description: Description | None = None,
        rows: list[tuple[Any, ...]] | None = None,
        rowcount: int = -1,
        lastrowid: int | None = None,
    ) -> None:
        self.description = description
        self.rows = rows or []
        self.rowcount = rowcount
        self.lastrowid = lastrowid


class Connection:
    """A connection to a database shared by many processes (PEP 249)."""

    Warning = errors.Warning
    Error = errors.Error
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(
        self,
        database: str | bytes | os.PathLike[str] | os.PathLike[bytes] | Database,
        timeout: float = 5.0,
        detect_types: int = 0,
        isolation_level: str | None = "",
        check_same_thread: bool = True,
        factory: Any = None,
        cached_statements: int = 128,
        uri: bool = False,
        *,
        ops: Ops | None = None,
        config: Config | None = None,
        **overrides: Any,
    ) -> None:
        """Open ``database``: a path, ``":memory:"`` (a private database of this
        connection), a ``file:`` URI with ``uri=True`` (``mode=ro`` refuses writes), or
        a :class:`onewriter.Database` this process opened (its writer role and ops are
        then shared). ``ops``, ``config`` and keyword overrides (``transaction_timeout``,
        ``role``, ...) configure onewriter as :func:`onewriter.connect` does.

        ``timeout`` (SQLite's busy timeout), ``factory`` and ``cached_statements`` are
        accepted and unused: nothing here waits on a lock.
        """
        if detect_types:
            raise NotSupportedError(
                "detect_types is not supported: column types do not travel with rows from "
                "the writer; convert values in the application (or with SQLAlchemy types)"
            )
        self._closed = True  # until opened: __del__ and close() have nothing to do
        self._shared, self._readonly = open_shared(
            database, uri=uri, ops=ops, config=config, overrides=overrides
        )
        self._closed = False
        self._lock = threading.RLock()
        self._thread = threading.get_ident()
        self._check_same_thread = check_same_thread
        self._channel: SyncChannel | None = None
        self._tx: int | None = None
        self._isolation_level: str | None = ""
        self.isolation_level = isolation_level
        self._last_rowid = 0
        self._total_changes = 0
        self.row_factory: Callable[[Any, tuple[Any, ...]], Any] | None = None
        self.text_factory: Callable[[bytes], Any] | type[str] = str

    # -- PEP 249 and the standard module's extensions -------------------------------------

    def cursor(self, factory: Callable[[Connection], Cursor] = _new_cursor) -> Cursor:
        self._check()
        cursor = factory(self)
        if not issubclass(type(cursor), Cursor):
            raise TypeError("factory must return a cursor, not " + type(cursor).__name__)
        return cursor

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        self._check()
        return Cursor._of(self).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str) -> Cursor:
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        """Commit the open transaction, if any (answered after COMMIT on the writer)."""
        with self._lock:
            self._check()
            if self._tx is not None:
                self._commit()

    def rollback(self) -> None:
        with self._lock:
            self._check()
            if self._tx is not None:
                self._rollback()

    def close(self) -> None:
        """Close: an open transaction is rolled back. Idempotent."""
        if not self._closed:
            self._check_thread()
        self._close()

    def interrupt(self) -> None:
        """Accepted for compatibility: a statement on the writer cannot be interrupted
        from here (``read_timeout`` and ``transaction_timeout`` bound them)."""
        self._check()

    def create_function(
        self,
        name: str,
        narg: int,
        func: Callable[..., Any] | None,
        *,
        deterministic: bool = False,
    ) -> None:
        """Register an SQL function on this process's readers. Statements on the writer
        (writes, and everything inside a transaction) cannot call it."""
        self._check()
        self._shared.functions.add(name, narg, func, deterministic)

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    @property
    def isolation_level(self) -> str | None:
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        if value is None:
            if self._tx is not None:
                self.commit()
            self._isolation_level = None
            return
        if not isinstance(value, str):
            raise TypeError("isolation_level must be str or None")
        level = str.upper(value)
        if level not in _ISOLATION_LEVELS:
            raise ValueError(
                "isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'"
            )
        self._isolation_level = level

    @property
    def total_changes(self) -> int:
        """Rows changed through this connection (counted here, not by SQLite)."""
        self._check()
        return self._total_changes

    def __enter__(self) -> Connection:
        self._check()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and "_closed" not in self.__dict__:
            raise ProgrammingError("Base Connection.__init__ not called.")
        reason = UNSUPPORTED_METHODS.get(name)
        if reason is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        def unsupported(*args: Any, **kwargs: Any) -> Any:
            self._check()
            raise NotSupportedError(f"Connection.{name}() is not supported: {reason}")

        return unsupported

    def __del__(self) -> None:
        if not self.__dict__.get("_closed", True) and not sys.is_finalizing():
            with contextlib.suppress(Exception):
                self._abandon()

    # -- what cursors call -----------------------------------------------------------------

    def _check(self) -> None:
        if self._closed or self._shared.closed:
            raise ProgrammingError("Cannot operate on a closed database.")
        self._check_thread()

    def _check_thread(self) -> None:
        if self._check_same_thread and threading.get_ident() != self._thread:
            raise ProgrammingError(
                "SQLite objects created in a thread can only be used in that same thread. "
                f"The object was created in thread id {self._thread} and this is thread id "
                f"{threading.get_ident()}."
            )

    def _run(self, sql: str, params: Any, *, many: bool, implicit: bool = True) -> Outcome:
        """Run one statement where it belongs; ``implicit``: open a transaction before
        DML as the standard module does (``executescript`` does not)."""
        statement = classify(sql)
        with self._lock:
            self._check()
            outcome = self._dispatch(statement, sql, params, many, implicit)
            if statement.kind in (Kind.DML, Kind.MAYBE_READ) and outcome.rowcount > 0:
                self._total_changes += outcome.rowcount
                if outcome.lastrowid and statement.keyword in ("INSERT", "REPLACE"):
                    self._last_rowid = outcome.lastrowid
            # As sqlite3_last_insert_rowid(): the connection's, not another client's.
            outcome.lastrowid = self._last_rowid
        return outcome

    def _script(self, script: str) -> None:
        with self._lock:
            self._check()
            if self._tx is not None:
                self._commit()
            for statement in split_script(script):
                self._run(statement, (), many=False, implicit=False)

    # -- where a statement runs ----------------------------------------------------------

    def _dispatch(
        self, statement: Statement, sql: str, params: Any, many: bool, implicit: bool
    ) -> Outcome:
        kind = statement.kind
        if kind is Kind.READ and self._tx is None and not many:
            return self._read(sql, params)  # the common case first
        if kind is Kind.EMPTY:
            return Outcome()
        if kind is Kind.UNSUPPORTED:
            raise NotSupportedError(statement.reason)
        if kind is Kind.BEGIN:
            if self._tx is not None:
                raise OperationalError("cannot start a transaction within a transaction")
            self._begin(None)
            return Outcome()
        if kind is Kind.COMMIT or kind is Kind.ROLLBACK:
            if self._tx is None:
                what = "commit" if kind is Kind.COMMIT else "rollback"
                raise OperationalError(f"cannot {what} - no transaction is active")
            self._commit() if kind is Kind.COMMIT else self._rollback()
            return Outcome()
        if kind is Kind.SETTING:
            return self._read(statement.query, ())
        if self._tx is not None:
            return self._statement({"t": "tx_exec", "tx": self._tx}, sql, params, many)
        if kind is Kind.SAVEPOINT:
            if statement.keyword == "SAVEPOINT":
                return self._begin((sql, params, many))  # as in SQLite, it opens one
            if statement.keyword == "PRAGMA":
                return Outcome()  # defer_foreign_keys: only meaningful inside one
            raise OperationalError("no such savepoint: no transaction is open")
        if kind is Kind.DML and implicit and self._isolation_level is not None:
            return self._begin((sql, params, many))
        if statement.returning:
            return self._single_transaction(sql, params, many)
        if not many and kind is Kind.MAYBE_READ and sql not in _KNOWN_WRITES:
            try:
                return self._read(sql, params)
            except errors.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_READONLY:
                    raise
                if len(_KNOWN_WRITES) >= _KNOWN_WRITES_LIMIT:
                    _KNOWN_WRITES.clear()
                _KNOWN_WRITES.add(sql)
        return self._autocommit(sql, params, many)

    def _read(self, sql: str, params: Any) -> Outcome:
        try:
            result = self._shared.readers().run(sql, params)
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise errors.from_sqlite(exc) from None
        except OneWriterError as exc:
            raise errors.from_onewriter(exc) from exc
        return Outcome(result.description, result.rows, result.rowcount, self._last_rowid)

    def _autocommit(self, sql: str, params: Any, many: bool) -> Outcome:
        fields = self._sql_fields(sql, params, many)
        fields["deadline"] = self._shared.config.request_timeout * 1000
        try:
            value = self._line().call(fields)
        except OneWriterError as exc:
            raise errors.from_onewriter(exc) from exc
        rows = [tuple(row) for row in value.get("rows") or ()]
        return Outcome(None, rows, int(value.get("rowcount", -1)), value.get("lastrowid"))

    def _single_transaction(self, sql: str, params: Any, many: bool) -> Outcome:
        """A statement that returns rows from the writer, outside a transaction: it
        needs the column names that only a transaction's statement result carries."""
        try:
            outcome = self._begin((sql, params, many))
        except BaseException:
            if self._tx is not None:
                self._rollback()
            raise
        if self._tx is not None:
            self._commit()
        return outcome

    # -- the transaction on the writer ----------------------------------------------------

    def _begin(self, first: tuple[str, Any, bool] | None) -> Outcome:
        fields: dict[str, Any] = {
            "t": "tx_begin",
            "deadline": self._shared.config.request_timeout * 1000,
        }
        if first is None:
            self._tx = self._transaction_call(fields)["tx"]
            return Outcome()
        sql, params, many = first
        fields.update(self._sql_fields(sql, params, many))
        value = self._transaction_call(fields)
        self._tx = value["tx"]
        return self._statement_outcome(value)

    def _statement(self, fields: dict[str, Any], sql: str, params: Any, many: bool) -> Outcome:
        fields.update(self._sql_fields(sql, params, many))
        return self._statement_outcome(self._transaction_call(fields))

    def _commit(self) -> None:
        value = self._transaction_call({"t": "tx_commit", "tx": self._tx}, write=True)
        if value is None:
            self._tx = None
            return
        self._statement_outcome(value)  # a deferred constraint failed: raises

    def _rollback(self) -> None:
        txid, self._tx = self._tx, None
        try:
            self._line().call({"t": "tx_rollback", "tx": txid}, write=False)
        except OneWriterError as exc:
            # It cannot commit any more: the writer rolls it back when this line drops
            # or when transaction_timeout passes.
            log.info("rollback of transaction %s not confirmed: %s", txid, exc)

    def _transaction_call(self, fields: dict[str, Any], *, write: bool = False) -> Any:
        try:
            return self._line().call(fields, write=write)
        except OneWriterError as exc:
            self._tx = None
            if fields["t"] == "tx_begin" or isinstance(exc, DeadlineExceeded | CommitFailed):
                message = exc.message
            elif fields["t"] == "tx_commit" and isinstance(exc, ClientTimeout):
                message = f"COMMIT may or may not have been applied: {exc.message}"
            else:
                message = f"the transaction is lost, nothing of it applied: {exc.message}"
            error = OperationalError(message)
            error.code = exc.code
            raise error from exc

    def _statement_outcome(self, value: dict[str, Any]) -> Outcome:
        if not value.get("open", True):
            self._tx = None
        error = value.get("error")
        if error is not None:
            raise errors.from_result(error)
        rows = [tuple(row) for row in value.get("rows") or ()]
        description = _describe(value.get("columns"))
        return Outcome(description, rows, value["rowcount"], value.get("lastrowid"))

    def _sql_fields(self, sql: str, params: Any, many: bool) -> dict[str, Any]:
        wire = many_for_writer(params) if many else for_writer(params)
        return {"sql": sql, "params": wire, "many": many}

    def _line(self) -> SyncChannel:
        """This connection's own line to the writer (a new one in a forked child)."""
        if self._readonly:
            error = OperationalError("attempt to write a readonly database")
            error.sqlite_errorcode = _SQLITE_READONLY
            error.sqlite_errorname = "SQLITE_READONLY"
            raise error
        core = self._shared.core()
        channel = self._channel
        if channel is None or channel.core is not core:
            if channel is not None:
                self._tx = None  # the parent's transaction, after fork
            channel = self._channel = SyncChannel(core)
        return channel

    def _abandon(self) -> None:
        """Close from the garbage collector, which may run on any thread (the writer's
        included): nothing here waits for a reply."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None and channel.core.pid == os.getpid():
            writer = channel.core.running_local_writer()
            if self._tx is not None and writer is not None:
                # A writer in this process sees no disconnect: tell it, without waiting.
                message = {"t": "tx_rollback", "tx": self._tx}
                writer.submit_transaction_threadsafe(
                    _Unanswered(), 0, message, channel.client, False
                )
            channel.close()  # a writer in another process sees the disconnect
        if self._shared.private_dir is not None:
            self._shared.close()

    def _close(self) -> None:
        if self._closed:
            return
        with self._lock:
            if self._tx is not None and not self._shared.closed:
                self._rollback()
            self._closed = True
            channel, self._channel = self._channel, None
            if channel is not None and channel.core.pid == os.getpid():
                channel.close()
            if self._shared.private_dir is not None:
                self._shared.close()


from ._cursor import Cursor  # noqa: E402  (the two classes refer to each other)
