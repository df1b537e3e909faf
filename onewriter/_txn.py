"""Interactive transactions: one client at a time holds the writer's connection.

A DB-API connection inside a transaction needs every statement, reads included, to run
in one open write transaction, so that it reads its own uncommitted writes. The writer
grants that to one client at a time. While a transaction is open the batch loop runs
nothing else and other requests stay queued (still bounded by ``max_pending``). A
transaction ends with its client's commit or rollback, or is rolled back when it has
held the writer for ``transaction_timeout``, or when its client disconnects.

Messages (docs/protocol.md)::

    {"id", "t": "tx_begin", "deadline", ["sql", "params", "many"]} -> {"tx": n, ...}
    {"id", "t": "tx_exec", "tx": n, "sql", "params", "many"}       -> a statement result
    {"id", "t": "tx_commit", "tx": n, "seq"}                        -> null, after COMMIT
    {"id", "t": "tx_rollback", "tx": n}                             -> null

A statement result is ``{"rowcount", "lastrowid", "columns", "rows", "open"}``, or
``{"error": {"type", "message", "sqlite_errorcode", "sqlite_errorname"}, "open"}`` when
SQLite refused the statement; ``open`` says whether the transaction is still open (some
errors make SQLite roll it back). Errors of the exchange itself (unknown transaction,
timeout, queue full) are ordinary error replies.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import reprlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from . import _protocol as proto
from ._config import Config
from ._engine import BEGIN_SQL, COMMIT_SQL, ROLLBACK_SQL, Engine, Request, Sink
from ._errors import (
    BadRequest,
    CommitFailed,
    DeadlineExceeded,
    OneWriterError,
    QueueFull,
    ShuttingDown,
)
from ._readonly import take_refusal

log = logging.getLogger("onewriter.writer")

TX_KINDS = frozenset({"tx_begin", "tx_exec", "tx_commit", "tx_rollback"})

#: Transactions ended by the writer whose clients may still ask about them.
_REMEMBERED = 256
#: Room left in a reply frame for the envelope around a result.
_ENVELOPE = 256


class _ResultTooLarge(Exception):
    """A statement's rows would not fit in one reply frame."""


class _Waiting:
    """A ``tx_begin`` waiting for its turn."""

    __slots__ = ("client", "deadline", "message", "owner", "rid", "sink")

    def __init__(
        self, sink: Sink, rid: int, message: dict[str, Any], owner: object, client: bytes | None
    ) -> None:
        self.sink = sink
        self.rid = rid
        self.message = message
        self.owner = owner
        self.client = client
        self.deadline = 0.0


class _Open:
    """The transaction holding the writer."""

    __slots__ = ("id", "opened", "owner", "timer")

    def __init__(self, txid: int, owner: object) -> None:
        self.id = txid
        self.owner = owner
        self.opened = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None


class Transactions:
    """The writer's interactive transactions. Driven on the writer's thread only."""

    def __init__(
        self,
        engine: Engine,
        loop: asyncio.AbstractEventLoop,
        config: Config,
        *,
        wake: Callable[[], None],
        backlog: Callable[[], int],
    ) -> None:
        self.engine = engine
        self.loop = loop
        self.config = config
        self._wake = wake
        self._backlog = backlog
        self.active: _Open | None = None
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)
        self._ended: collections.OrderedDict[int, tuple[object, OneWriterError]] = (
            collections.OrderedDict()
        )
        self._draining = False
        self.counts: collections.Counter[str] = collections.Counter()

    # -- what the writer service calls ------------------------------------------------

    @property
    def holds_writer(self) -> bool:
        """Whether a transaction owns the connection (the batch loop must wait)."""
        return self.active is not None

    def handle(
        self, sink: Sink, rid: int, message: dict[str, Any], owner: object, client: bytes | None
    ) -> None:
        """Take one ``tx_*`` message from ``owner`` (a connection, or a local client id)."""
        kind = message.get("t")
        try:
            if kind == "tx_begin":
                self._enqueue(_Waiting(sink, rid, message, owner, client))
                return
            tx = self._owned(message, owner, client, kind)
            if kind == "tx_exec":
                assert tx is not None
                result: Any = self._statement(message)
                self._after_statement(tx, result)
            elif kind == "tx_commit":
                result = self._commit(tx, sink, message, client) if tx is not None else None
            else:
                if tx is not None:
                    self._rollback(tx, "rolled_back")
                result = None
        except OneWriterError as exc:
            _reply(sink, rid, None, exc)
            return
        _reply(sink, rid, result, None)

    def start_next(self) -> bool:
        """Open the next waiting transaction; True when one now holds the writer."""
        while self.active is None and self._waiting:
            waiting = self._waiting.popleft()
            now = time.monotonic()
            if waiting.deadline < now:
                late = 1000 * (now - waiting.deadline)
                error = DeadlineExceeded(f"deadline passed {late:.0f} ms before BEGIN could run")
                _reply(waiting.sink, waiting.rid, None, error)
                continue
            try:
                self.engine.conn.execute(BEGIN_SQL)
            except sqlite3.Error as exc:
                _reply(waiting.sink, waiting.rid, None, CommitFailed(f"could not begin: {exc}"))
                continue
            tx = _Open(next(self._ids), waiting.owner)
            tx.timer = self.loop.call_later(self.config.transaction_timeout, self._expire, tx)
            self.active = tx
            self.counts["begun"] += 1
            result: dict[str, Any] = {"tx": tx.id}
            if waiting.message.get("sql") is not None:
                result.update(self._statement(waiting.message))
                if "error" in result and result["open"]:
                    # Nothing else ran in it: end it now rather than hold the writer
                    # for a client that may well give up.
                    self._rollback(tx, "rolled_back")
                    result["open"] = False
                else:
                    self._after_statement(tx, result)
            _reply(waiting.sink, waiting.rid, result, None)
        return self.active is not None

    def connection_lost(self, owner: object) -> None:
        """The client went away: forget its waiting begins, roll back its transaction."""
        if any(w.owner == owner for w in self._waiting):
            self._waiting = collections.deque(w for w in self._waiting if w.owner != owner)
        tx = self.active
        if tx is not None and tx.owner == owner:
            log.warning("client disconnected inside transaction %d: rolled back", tx.id)
            self._rollback(tx, "abandoned")

    def drain(self) -> None:
        """Refuse new and waiting begins; an open transaction may still finish."""
        self._draining = True
        waiting, self._waiting = self._waiting, collections.deque()
        for w in waiting:
            _reply(w.sink, w.rid, None, ShuttingDown("the writer is draining; retry"))

    def stats(self) -> dict[str, Any]:
        tx = self.active
        return {
            **self.counts,
            "waiting": len(self._waiting),
            "open_ms": round(1000 * (time.monotonic() - tx.opened), 3) if tx else None,
        }

    # -- the state machine ------------------------------------------------------------

    def _enqueue(self, waiting: _Waiting) -> None:
        if self._draining:
            raise ShuttingDown("the writer is draining; retry on the next writer")
        queued = len(self._waiting) + self._backlog()
        if queued >= self.config.max_pending:
            raise QueueFull(f"{queued} requests are pending at the writer")
        if waiting.message.get("sql") is not None:
            _statement_fields(waiting.message)  # refuse a malformed one before BEGIN
        timeout = self.config.request_timeout
        deadline_ms = waiting.message.get("deadline")
        if isinstance(deadline_ms, int | float) and not isinstance(deadline_ms, bool):
            timeout = min(timeout, max(0.0, deadline_ms / 1000))
        waiting.deadline = time.monotonic() + timeout
        self._waiting.append(waiting)
        self._wake()

    def _owned(
        self, message: dict[str, Any], owner: object, client: bytes | None, kind: Any
    ) -> _Open | None:
        """The open transaction named by ``message`` if ``owner`` holds it. ``None`` for
        a rollback (or a commit retried after failover) of one that is already over."""
        txid = message.get("tx")
        tx = self.active
        if tx is not None and tx.id == txid and tx.owner == owner:
            return tx
        if kind == "tx_rollback":
            return None
        ended = self._ended.get(txid) if isinstance(txid, int) else None
        if ended is not None and ended[0] == owner:
            raise ended[1]
        if kind == "tx_commit" and self._committed_before(message, client):
            return None
        raise BadRequest(
            f"transaction {reprlib.repr(txid)} is not open on this connection (writer changed?)"
        )

    def _committed_before(self, message: dict[str, Any], client: bytes | None) -> bool:
        """A commit re-sent after failover: did an earlier writer commit it?"""
        seq = message.get("seq")
        if message.get("retry") is not True or client is None:
            return False
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            return False
        return self.engine._lookup(client, seq) is not None

    def _statement(self, message: dict[str, Any]) -> dict[str, Any]:
        sql, params, many = _statement_fields(message)
        engine = self.engine
        conn = engine.conn
        # The engine's authorizer refuses BEGIN/COMMIT/ROLLBACK (and its own savepoints)
        # outside its internal statements: the client may not end the transaction by SQL.
        engine._internal = False
        engine.raw_sql = True
        try:
            cursor = conn.executemany(sql, params) if many else conn.execute(sql, params)
            try:
                description = cursor.description
                rows = cursor.fetchall() if description else []
                if rows and len(proto.pack(rows)) > self.config.max_frame - _ENVELOPE:
                    raise _ResultTooLarge(
                        "the rows are over max_frame: fetch them in parts (LIMIT/OFFSET) "
                        "or read them outside the transaction"
                    )
                result: dict[str, Any] = {
                    "rowcount": cursor.rowcount,
                    "lastrowid": cursor.lastrowid,
                    "columns": [d[0] for d in description] if description else None,
                    "rows": rows,
                }
            finally:
                cursor.close()
        except (sqlite3.Error, sqlite3.Warning) as exc:
            result = {"error": describe_error(exc)}
            refusal = take_refusal(exc)
            if refusal is not None:
                result["error"]["message"] += f" (refused on the writer: {refusal.reason})"
        except _ResultTooLarge as exc:
            result = {"error": {"type": "OperationalError", "message": str(exc)}}
        except (OverflowError, ValueError, TypeError) as exc:
            result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        finally:
            engine._internal = True
            engine.raw_sql = False
        result["open"] = conn.in_transaction
        return result

    def _after_statement(self, tx: _Open, result: dict[str, Any]) -> None:
        if not result["open"]:
            # SQLite rolled the transaction back itself (ON CONFLICT ROLLBACK, I/O error).
            self._end(tx, "rolled_back")

    def _commit(self, tx: _Open, sink: Sink, message: dict[str, Any], client: bytes | None) -> Any:
        conn = self.engine.conn
        seq = message.get("seq")
        try:
            if client is not None and isinstance(seq, int) and not isinstance(seq, bool):
                # Recorded in the same transaction, in the engine's exactly-once table: a
                # commit re-sent after failover is recognised by the next writer.
                committed = Request(sink, message.get("id"), client=client, seq=seq)
                committed.encoded = proto.pack(None)
                self.engine._record([committed])
            conn.execute(COMMIT_SQL)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                # A deferred constraint failed: as in SQLite, the transaction stays
                # open for the client to fix or roll back.
                return {"error": describe_error(exc), "open": True}
            self._end(tx, "commit_failed")
            raise CommitFailed(f"COMMIT failed; nothing of it applied: {exc}") from None
        self.engine.commits += 1
        self.engine._commits_since_checkpoint += 1
        self._end(tx, "committed")
        return None

    def _rollback(self, tx: _Open, outcome: str) -> None:
        conn = self.engine.conn
        if conn.in_transaction:
            try:
                conn.execute(ROLLBACK_SQL)
            except sqlite3.Error:
                log.exception("ROLLBACK of transaction %d failed", tx.id)
        self._end(tx, outcome)

    def _expire(self, tx: _Open) -> None:
        if self.active is not tx:
            return
        limit = self.config.transaction_timeout
        log.warning("transaction %d held the writer past %.1f s: rolled back", tx.id, limit)
        error = DeadlineExceeded(
            f"transaction rolled back: it held the writer longer than "
            f"transaction_timeout ({limit:g} s)"
        )
        self._ended[tx.id] = (tx.owner, error)
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)
        self._rollback(tx, "timed_out")

    def _end(self, tx: _Open, outcome: str) -> None:
        if tx.timer is not None:
            tx.timer.cancel()
        if self.active is tx:
            self.active = None
        self.counts[outcome] += 1
        self._wake()


def _statement_fields(message: dict[str, Any]) -> tuple[str, Any, bool]:
    sql = message.get("sql")
    if not isinstance(sql, str):
        raise BadRequest("sql must be a string")
    params = message.get("params")
    many = message.get("many") is True
    if params is None:
        params = ()
    if many:
        if not isinstance(params, list) or not all(isinstance(p, list | dict) for p in params):
            raise BadRequest("params for many must be a list of lists or maps")
    elif not isinstance(params, list | dict | tuple):
        raise BadRequest("params must be a list or a map")
    return sql, params, many


def describe_error(exc: sqlite3.Error | sqlite3.Warning) -> dict[str, Any]:
    """An SQLite error as a statement result carries it to the client."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "sqlite_errorcode": getattr(exc, "sqlite_errorcode", None),
        "sqlite_errorname": getattr(exc, "sqlite_errorname", None),
    }


def _reply(sink: Sink, rid: int, result: Any, error: OneWriterError | None) -> None:
    request = Request(sink, rid)
    if error is None:
        request.encoded = proto.pack(result)
    request.error = error
    sink.deliver(request)
    sink.flush()
