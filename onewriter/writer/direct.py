"""Direct writes: this process's own transactions, on its own connections, under the turn.

A sync ``write`` or ``execute_write`` takes the write turn, runs in a ``BEGIN IMMEDIATE``
transaction of its own on a write connection of the calling thread, commits, and gives
the turn on: no thread hop, no socket round trip. Each thread has its own connection
(opened lazily with the writer's PRAGMAs), so threads never share a transaction.

The op runs under the same rules as on the elected writer: it may not end the
transaction (an authorizer refuses), its result must encode as msgpack within the frame
limit, and a failing op is rolled back alone with ``OP_FAILED``. Past
``transaction_timeout`` the turn's watchdog interrupts the connection; the transaction
is rolled back and the caller gets ``TIMEOUT``.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import (
    Closed,
    CommitFailed,
    DeadlineExceeded,
    OneWriterError,
    SqlNotAllowed,
    UnknownOp,
)
from ..ops import Ops
from ..sqlite.connect import open_connection
from ..sqlite.readonly import confine_sql
from ..sqlite.upkeep import BEGIN_SQL, COMMIT_SQL, ROLLBACK_SQL, Checkpointer, migrate
from ..turn import WriteTurn, turn_for
from ..wire import frames as proto
from .engine import Unsendable, Window, denied, op_error

log = logging.getLogger("onewriter.direct")

_REPLY_OVERHEAD = 64
#: Raw SQL that may run as an autocommit statement (see ``DirectWriter._autocommit``):
#: one INSERT, UPDATE, DELETE or REPLACE that returns no rows and asks for no FAIL.
_PLAIN_WRITE = re.compile(r"\s*(?:insert|update|delete|replace)\b", re.IGNORECASE)
_UNPLAIN_WORDS = re.compile(r"returning|fail", re.IGNORECASE)
_PLAIN_SQL_KEPT = 1024
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1  # msgpack's integers
_SHORT = 4096
#: Whether a table, trigger or index asks for FAIL (a failing statement keeps its
#: earlier rows), in the schema or the temp schema; the match is loose on purpose.
SCHEMA_HAS_FAIL_SQL = (
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE sql LIKE '%fail%')"
    " OR EXISTS (SELECT 1 FROM sqlite_temp_master WHERE sql LIKE '%fail%')"
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a raw SQL write."""

    rowcount: int
    lastrowid: int | None
    rows: list[list[Any]]


_new_result = object.__new__
_set_rowcount = vars(WriteResult)["rowcount"].__set__  # the slots' own descriptors
_set_lastrowid = vars(WriteResult)["lastrowid"].__set__
_set_rows = vars(WriteResult)["rows"].__set__


def write_result(rowcount: int, lastrowid: int | None, rows: list[list[Any]]) -> WriteResult:
    """A :class:`WriteResult`, made for every write: filling its slots directly
    takes half the time of a frozen dataclass's ``__init__`` (0.3 against 0.55 us)."""
    result: WriteResult = _new_result(WriteResult)
    _set_rowcount(result, rowcount)
    _set_lastrowid(result, lastrowid)
    _set_rows(result, rows)
    return result


class _Line:
    """One thread's write connection, its authorizer switch, and what a call reuses."""

    __slots__ = (
        "compiled",
        "conn",
        "cursor",
        "internal",
        "interrupt",
        "plain_schema",
        "raw_sql",
        "thread",
    )

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cursor = conn.cursor()  # for BEGIN and COMMIT: no cursor made per call
        self.interrupt = conn.interrupt
        self.internal = True
        self.raw_sql = False  # raw SQL is running: confined to this database, as on the writer
        #: Set whenever SQLite compiles a statement of the caller's (first run, or again
        #: after a schema change); ``None`` refuses any compile (the autocommit path).
        self.compiled: bool | None = False
        #: Whether the schema, as of the last compile, has no FAIL conflict handling.
        self.plain_schema = False
        self.thread = threading.current_thread()
        conn.set_authorizer(self._authorize)

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if self.internal:
            return sqlite3.SQLITE_OK
        if self.compiled is None:
            self.compiled = True
            return sqlite3.SQLITE_DENY  # compiling again: see DirectWriter._autocommit
        self.compiled = True
        if denied(action, arg2) or (self.raw_sql and confine_sql(action, arg1, arg2)):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class DirectWriter:
    """This process's direct transactions on one database file."""

    def __init__(self, db_path: str, config: Config, ops: Ops) -> None:
        self.db_path = db_path
        self.config = config
        self.ops = ops
        self.turn: WriteTurn = turn_for(db_path)
        self._local = threading.local()
        self._lines: list[_Line] = []
        self._lock = threading.Lock()
        self._migrated = False
        self._checkpointer: Checkpointer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._max_result = config.max_frame - _REPLY_OVERHEAD
        self._get_op = ops.get
        self._allow_sql = config.allow_sql
        self._request_timeout = config.request_timeout
        self._transaction_timeout = config.transaction_timeout
        self._plain_sql: dict[str, bool] = {}
        self._checkpoint_every = config.checkpoint_every
        self.commits = 0
        self.ops_by_name: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.turn_wait_ms = Window()
        self.closed = False

    # -- the two kinds of write -----------------------------------------------------------

    def write(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the op registered as ``name`` in a transaction of its own; its result."""
        op = self._get_op(name)
        if op is None:
            self.errors["UNKNOWN_OP"] += 1
            raise UnknownOp(f"no op named {name!r} is registered")
        return self._run(self._line(), op.fn, args, kwargs, name, True)

    def execute(self, sql: str, params: Any, many: bool) -> WriteResult:
        """Run one raw SQL write (or ``executemany``) in a transaction of its own, or as
        SQLite's own autocommit statement where that is just as atomic."""
        if not self._allow_sql:
            self.errors["SQL_NOT_ALLOWED"] += 1
            raise SqlNotAllowed("raw SQL writes are disabled (allow_sql=False)")
        line = self._line()
        if not many and line.plain_schema:
            plain = self._plain_sql.get(sql)
            if plain is None:
                plain = self._remember(sql)
            if plain:
                done = self._autocommit(line, sql, params)
                if done is not None:
                    return done
        result: WriteResult = self._run(
            line, self._statement, (sql, params, many), None, None, False
        )
        return result

    def _remember(self, sql: str) -> bool:
        if len(self._plain_sql) >= _PLAIN_SQL_KEPT:
            self._plain_sql.clear()
        plain = self._plain_sql[sql] = bool(
            _PLAIN_WRITE.match(sql) and not _UNPLAIN_WORDS.search(sql)
        )
        return plain

    def _statement(self, conn: sqlite3.Connection, sql: str, params: Any, many: bool) -> Any:
        if many:
            cur = conn.executemany(sql, params)
            return write_result(cur.rowcount, cur.lastrowid, [])
        cur = conn.execute(sql, params)
        if cur.description is None:
            return write_result(cur.rowcount, cur.lastrowid, [])
        # Rows as they would arrive from the writer (lists), refused where they could
        # not be sent.
        encoded = self._encode(cur.fetchall())
        rows = [] if encoded is None else list(proto.unpack(encoded))
        return write_result(cur.rowcount, cur.lastrowid, rows)

    def executor(self) -> ThreadPoolExecutor:
        """Threads for the asyncio face's direct writes (its loop never blocks)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(4, thread_name_prefix="onewriter-direct")
            return self._executor

    # -- one transaction --------------------------------------------------------------

    def _run(
        self,
        line: _Line,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        name: str | None,
        encode: bool,
    ) -> Any:
        """``fn(conn, *args, **kwargs)`` in a transaction of its own, under the turn;
        with ``encode``, its result goes through msgpack as the funnel's would."""
        conn = line.conn
        turn = self.turn
        hold = turn.acquire(
            self._request_timeout, limit=self._transaction_timeout, interrupt=line.interrupt
        )
        try:
            self.turn_wait_ms.add(hold.waited_ms)
            if not self._migrated:
                self._migrate(conn)
            try:
                line.cursor.execute(BEGIN_SQL)  # busy_timeout waits for tools outside onewriter
            except sqlite3.Error as exc:
                raise CommitFailed(f"could not begin: {exc}") from None
            try:
                line.internal = False
                line.raw_sql = name is None
                try:
                    result = fn(conn, *args, **kwargs) if kwargs else fn(conn, *args)
                finally:
                    line.internal = True
                encoded = self._encode(result) if encode and not _as_sent(result) else None
                if hold.overdue:
                    raise DeadlineExceeded("past transaction_timeout")
                if line.compiled:
                    _look_at_schema(line)
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute(ROLLBACK_SQL)
                if line.compiled:
                    _look_at_schema(line)
                raise self._failure(exc, hold.overdue, name) from None
            try:
                line.cursor.execute(COMMIT_SQL)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute(ROLLBACK_SQL)
                raise self._failure(exc, hold.overdue, name, committing=True) from None
            self._committed(conn, name or "sql")
        finally:
            turn.release()
        if encoded is None:
            return result
        return proto.unpack(encoded)

    def _autocommit(self, line: _Line, sql: str, params: Any) -> WriteResult | None:
        """One plain INSERT/UPDATE/DELETE as SQLite's own autocommit statement, under the
        turn: it applies whole or not at all, with no BEGIN and COMMIT of its own.

        Only a statement SQLite already compiled in a transaction of ours, against a
        schema with no FAIL conflict handling (which would keep a failing statement's
        earlier rows), runs here. Were it compiled again (the schema changed since),
        the authorizer refuses before anything runs, and ``None`` sends the statement to
        a transaction, which compiles it and looks at the schema again.
        """
        conn = line.conn
        turn = self.turn
        hold = turn.acquire(
            self._request_timeout, limit=self._transaction_timeout, interrupt=line.interrupt
        )
        try:
            self.turn_wait_ms.add(hold.waited_ms)
            line.internal = False
            line.raw_sql = True
            line.compiled = None
            try:
                cur = conn.execute(sql, params)
            except BaseException as exc:
                if line.compiled:  # refused while compiling: nothing ran
                    return None
                if conn.in_transaction:
                    conn.execute(ROLLBACK_SQL)
                raise self._failure(exc, hold.overdue, None) from None
            finally:
                line.internal = True
                line.compiled = False
            # Committed by now, even were it overdue: the caller is told so.
            result = write_result(cur.rowcount, cur.lastrowid, [])
            self._committed(conn, "sql")
        finally:
            turn.release()
        return result

    def _committed(self, conn: sqlite3.Connection, name: str) -> None:
        """Count a commit; every ``checkpoint_every`` commits, see to the WAL's size."""
        self.commits += 1
        self.ops_by_name[name] += 1
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.commits += 1
            if checkpointer.commits >= self._checkpoint_every and checkpointer.oversized():
                checkpointer.conn = conn
                checkpointer.run()

    def _encode(self, result: Any) -> bytes | None:
        """The result as the funnel would send it (``None`` stays as it is)."""
        if result is None:
            return None
        try:
            encoded = proto.pack(result)
        except Exception as exc:
            raise Unsendable(f"msgpack cannot encode it: {type(exc).__name__}") from exc
        if len(encoded) > self._max_result:
            raise Unsendable(
                f"it is {len(encoded)} bytes, over the frame limit of {self._max_result}"
            )
        return encoded

    def _failure(
        self, exc: BaseException, overdue: bool, name: str | None, *, committing: bool = False
    ) -> BaseException:
        what = "SQL" if name is None else f"op {name!r}"
        error: BaseException
        if overdue:
            limit = self.config.transaction_timeout
            error = DeadlineExceeded(
                f"{what} rolled back: it held the write turn past transaction_timeout ({limit:g} s)"
            )
        elif committing:
            error = CommitFailed(f"COMMIT failed; nothing of it applied: {exc}")
        elif isinstance(exc, OneWriterError):
            error = exc
        elif isinstance(exc, Exception):
            error = op_error(what, exc, sql=name is None)
        else:
            return exc  # KeyboardInterrupt and the like: rolled back, passed on
        self.errors[getattr(error, "code", "ERROR")] += 1
        return error

    # -- connections ------------------------------------------------------------------

    def _line(self) -> _Line:
        try:
            line: _Line = self._local.line
        except AttributeError:
            return self._open_line()
        return line

    def _open_line(self) -> _Line:
        """This thread's first direct write: its connection."""
        if self.closed:
            raise Closed(f"the database {self.db_path!r} is closed")
        line = _Line(open_connection(self.db_path, self.config, "direct"))
        self._local.line = line
        with self._lock:
            # Threads come and go (executors): a finished thread's connection is
            # closed here rather than kept until the database closes.
            gone = [old for old in self._lines if not old.thread.is_alive()]
            self._lines = [old for old in self._lines if old.thread.is_alive()]
            self._lines.append(line)
            if self._checkpointer is None:
                self._checkpointer = Checkpointer(self.db_path, line.conn, self.config, self.turn)
        for old in gone:
            _close_quietly(old.conn)
        return line

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply pending migrations once per process (the writer may not be running)."""
        if self.config.migrations:
            migrate(conn, self.config.migrations, self.turn, self.config.request_timeout)
        self._migrated = True

    def stats(self) -> dict[str, Any]:
        checkpointer = self._checkpointer
        return {
            "commits": self.commits,
            "ops": dict(self.ops_by_name),
            "errors": dict(self.errors),
            "connections": len(self._lines),
            "checkpoints": checkpointer.checkpoints if checkpointer is not None else 0,
            "turn_wait_ms": self.turn_wait_ms.percentiles(),
        }

    def close(self) -> None:
        """Close every thread's connection (none may be inside a transaction now)."""
        self.closed = True
        with self._lock:
            lines, self._lines = self._lines, []
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        for line in lines:
            _close_quietly(line.conn)


def _as_sent(result: Any) -> bool:
    """Whether ``result`` comes back from msgpack as it is (no need to encode it): None,
    a bool, a float, a 64-bit int, a short ASCII string."""
    kind = type(result)
    if kind is int:
        return bool(_INT_MIN <= result <= _UINT_MAX)
    if kind is str:
        return len(result) <= _SHORT and result.isascii()
    return result is None or kind is float or kind is bool


def _look_at_schema(line: _Line) -> None:
    """A statement was just compiled against the schema as it is now (under the turn):
    whether that schema lets cached plain statements run without a transaction."""
    line.compiled = False
    try:
        line.plain_schema = not line.conn.execute(SCHEMA_HAS_FAIL_SQL).fetchone()[0]
    except sqlite3.Error:
        line.plain_schema = False


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        log.warning("closing a direct write connection failed: %s", exc)
