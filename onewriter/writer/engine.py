"""The batch engine: runs requests on the one write connection, in group commits.

Every waiting request (up to ``max_batch``) runs in one ``BEGIN IMMEDIATE`` transaction,
each in a savepoint of its own, so that one failing op fails alone. Replies are made
only after COMMIT. The engine does no I/O of its own; the writer service feeds it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Protocol

from ..config import Config, Migration
from ..errors import (
    BadRequest,
    CommitFailed,
    DeadlineExceeded,
    OneWriterError,
    OpFailed,
    SqlNotAllowed,
)
from ..ops import Ops
from ..sqlite.readonly import confine_sql, take_refusal
from ..sqlite.upkeep import BEGIN_SQL, COMMIT_SQL, ROLLBACK_SQL, Checkpointer, migrate
from ..turn import Hold, TurnTimeout, turn_for
from ..wire import frames as proto
from .dedup import Applied

log = logging.getLogger("onewriter.writer")

_SQLITE_TRANSACTION = 22
_SQLITE_SAVEPOINT = 32
_STORAGE_ERRORS = {10, 13}  # SQLITE_IOERR, SQLITE_FULL (primary codes)

# The engine's own transaction statements carry a marker. sqlite3 caches prepared
# statements by their text and the authorizer runs only when one is prepared: an op's
# plain "COMMIT" must never reuse the engine's cached, already authorized statement.
SAVEPOINT_SQL = "SAVEPOINT _ow /* onewriter */"
RELEASE_SQL = "RELEASE _ow /* onewriter */"
ROLLBACK_TO_SQL = "ROLLBACK TO _ow /* onewriter */"

_REPLY_OVERHEAD = 64  # a reply's id and keys around its result, with room to spare

# Reply bodies are spliced from pre-encoded parts: {"id": id, "ok": true, "result": ...}
_OK_HEAD = b"\x83" + proto.pack("id")
_OK_TAIL = proto.pack("ok") + proto.pack(True) + proto.pack("result")
# A raw SQL write's result, {"rowcount": n, "lastrowid": n, "rows": [...]}, likewise.
_RESULT_ROWCOUNT = b"\x83" + proto.pack("rowcount")
_RESULT_LASTROWID = proto.pack("lastrowid")
_RESULT_ROWS = proto.pack("rows")
_EMPTY_LIST = proto.pack([])


def denied(action: int, savepoint: str | None) -> bool:
    """Whether an op's statement would end or escape the transaction it runs in."""
    if action == _SQLITE_TRANSACTION:
        return True
    return action == _SQLITE_SAVEPOINT and savepoint is not None and savepoint.startswith("_ow")


class Unsendable(Exception):
    """An op's result could not be encoded for its reply."""


def op_error(what: str, exc: Exception, *, sql: bool = False) -> OneWriterError:
    """The error an op's exception becomes (``what``: "op 'name'" or "SQL"; ``sql``:
    it was raw SQL, confined to this database)."""
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in _STORAGE_ERRORS:
            return CommitFailed(f"{what}: storage error, nothing applied: {exc}")
        refusal = take_refusal(exc)
        if refusal is not None and sql:
            return SqlNotAllowed(
                f"SQL may write this database but not reach other files or change the "
                f"writer's shared connection; refused: {refusal.reason}"
            )
        if "not authorized" in str(exc):
            return OpFailed(
                f"{what} tried to control the transaction: ops run inside the writer's "
                "transaction and must not BEGIN, COMMIT, ROLLBACK or RELEASE it"
            )
    if sql and isinstance(exc, sqlite3.ProgrammingError | ValueError | TypeError):
        # Raw SQL whose parameters cannot be bound (a type SQLite does not store, the
        # wrong count, not a sequence or map): the caller's input, before anything ran.
        return BadRequest(f"SQL parameters: {exc}")
    if isinstance(exc, Unsendable):
        return OpFailed(f"{what} returned a result that cannot be sent: {exc}")
    return OpFailed(f"{what} raised {type(exc).__name__}: {exc}")


def _applied_earlier(pending: list[Request], retry: Request) -> bytes | None:
    """The result of the same write applied earlier in this batch (its record is written
    only at the end of the batch), for a retry that caught up with its original."""
    for req in pending:
        if req is retry:
            return None
        if (
            req.seq == retry.seq
            and req.client == retry.client
            and req.encoded is not None
            and not req.replayed
        ):
            return req.encoded
    return None


class Sink(Protocol):
    """Where requests' outcomes go: a connection, a Redis batch, a caller in this
    process. ``deliver`` may be called several times before one ``flush``."""

    def deliver(self, requests: list[Request]) -> None: ...

    def flush(self) -> None: ...


class Request:
    """One write request as the engine sees it."""

    __slots__ = (
        "args",
        "client",
        "deadline",
        "encoded",
        "error",
        "kwargs",
        "many",
        "name",
        "params",
        "replayed",
        "retry",
        "rid",
        "seq",
        "sink",
        "sql",
        "tag",
    )

    def __init__(
        self,
        sink: Sink,
        rid: Any,
        name: str | None,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        sql: str | None,
        params: Any,
        many: bool,
        deadline: float | None,
        client: bytes | None,
        seq: int | None,
        retry: bool,
        tag: Any = None,
    ) -> None:
        self.sink = sink
        self.rid = rid
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.sql = sql
        self.params = params
        self.many = many
        self.deadline = deadline
        self.client = client
        self.seq = seq
        self.retry = retry
        self.tag = tag  # the endpoint's note on where the reply goes
        self.encoded: bytes | None = None
        self.replayed = False
        self.error: OneWriterError | None = None

    def reply_body(self) -> bytes:
        """This request's reply, msgpack-encoded."""
        if self.error is not None:
            return proto.pack({"id": self.rid, "error": self.error.to_wire()})
        assert self.encoded is not None
        return _OK_HEAD + proto.pack_id(self.rid) + _OK_TAIL + self.encoded


class Window:
    """The last ``size`` samples of a figure, for percentiles in stats."""

    __slots__ = ("_samples",)

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def percentiles(self) -> dict[str, float]:
        data = sorted(self._samples)
        if not data:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        last = len(data) - 1
        return {
            "p50": data[int(last * 0.50)],
            "p95": data[int(last * 0.95)],
            "p99": data[int(last * 0.99)],
            "max": data[-1],
        }


class Engine:
    """Owns the write connection. Not thread-safe: one thread drives it."""

    def __init__(self, path: str, conn: sqlite3.Connection, config: Config, ops: Ops) -> None:
        self.path = path
        self.conn = conn
        self.config = config
        self.ops = ops
        self._internal = True
        self.raw_sql = False  # raw SQL is running: confined to this database (_readonly)
        conn.set_authorizer(self._authorize)
        self.turn = turn_for(path)
        self.checkpointer = Checkpointer(path, conn, config, self.turn)
        self._hold: Hold | None = None
        self.started = time.time()
        self.batches = 0
        self.requests = 0
        self.commits = 0
        self.commit_failures = 0
        self.ops_by_name: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.batch_sizes = Window()
        self.commit_ms = Window()
        self._last_expire = time.monotonic()
        self.applied = Applied(conn)
        self._pack = proto.packer()  # this engine's thread only
        self._cursor = conn.cursor()  # raw SQL runs on one kept cursor (none made per write)

    # -- setup ---------------------------------------------------------------------

    def prepare(self, migrations: Sequence[Migration]) -> int:
        """Apply pending migrations (under the turn), and bring an earlier version's
        exactly-once table up to date; returns the schema version."""
        version = migrate(self.conn, migrations, self.turn, self.config.request_timeout)
        if self.applied.outdated():
            with self.turn.holding(self.config.request_timeout):
                self.applied.upgrade()
        return version

    # -- the authorizer keeps ops from ending the writer's transaction ------------------

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if self._internal:
            return sqlite3.SQLITE_OK
        if denied(action, arg2) or (self.raw_sql and confine_sql(action, arg1, arg2)):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    # -- running a batch ---------------------------------------------------------------

    def run_batch(self, batch: Sequence[Request]) -> None:
        """Run, commit and deliver ``batch``. Every request gets exactly one outcome."""
        self.batches += 1
        self.requests += len(batch)
        self.batch_sizes.add(len(batch))
        now = time.monotonic()
        runnable: list[Request] = []
        earliest = last = None
        for req in batch:
            deadline = req.deadline
            if deadline is None:
                runnable.append(req)
            elif deadline < now:
                req.error = DeadlineExceeded(
                    f"deadline passed {1000 * (now - deadline):.0f} ms before it could run"
                )
            else:
                runnable.append(req)
                if earliest is None or deadline < earliest:
                    earliest = deadline
                if last is None or deadline > last:
                    last = deadline
        if runnable:
            started = time.perf_counter()
            self._under_turn(runnable, now, earliest, last)
            self.commit_ms.add(1000 * (time.perf_counter() - started))
        self._deliver(batch)

    def _under_turn(
        self, runnable: list[Request], now: float, earliest: float | None, last: float | None
    ) -> None:
        """Take the write turn (waiting at most until the last deadline), then commit;
        requests whose deadline passed while waiting for the turn are not run."""
        wait = self.config.request_timeout if last is None else max(0.0, last - now)
        try:
            hold = self.turn.acquire(
                wait, limit=self.config.transaction_timeout, interrupt=self.conn.interrupt
            )
        except TurnTimeout as exc:
            self._fail_all(runnable, exc)
            return
        self._hold = hold
        try:
            after = time.monotonic()
            if earliest is not None and earliest < after:
                late = [r for r in runnable if r.deadline is not None and r.deadline < after]
                self._fail_all(late, DeadlineExceeded("the write turn came after the deadline"))
                runnable = [r for r in runnable if r.error is None]
            self._transaction(runnable)
        except Exception as exc:
            # A fault of the engine itself: nothing of the batch may count as applied,
            # and every request still gets its answer.
            log.exception("a batch of %d failed unexpectedly", len(runnable))
            self._abandon_transaction()
            self._fail_all(runnable, CommitFailed(f"the writer failed the batch: {exc}"))
        finally:
            self._hold = None
            self.turn.release()

    def _abandon_transaction(self) -> None:
        self._internal = True
        self.applied.abandoned()
        if self.conn.in_transaction:
            try:
                self.conn.execute(ROLLBACK_SQL)
            except sqlite3.Error:
                log.exception("ROLLBACK of an abandoned batch failed")

    def _transaction(self, runnable: list[Request]) -> None:
        """Commit ``runnable`` as one transaction.

        The first pass runs every op without savepoints (two statements fewer per op).
        If one fails, the transaction is rolled back, that op keeps its error, and the
        others run again, each in a savepoint of its own. Nothing is answered before
        COMMIT, so a discarded pass is never seen.
        """
        conn = self.conn
        pending = runnable
        guarded = False
        while pending:
            try:
                conn.execute(BEGIN_SQL)
            except sqlite3.Error as exc:
                self._fail_all(pending, CommitFailed(f"could not begin: {exc}"))
                return
            failed = self._run_all(pending, guarded)
            if failed:
                # An op failed on the unguarded pass, or SQLite rolled the whole
                # transaction back (storage errors do): run the rest again, guarded.
                if conn.in_transaction:
                    conn.execute(ROLLBACK_SQL)
                pending = [r for r in pending if r.error is None]
                for req in pending:
                    req.encoded = None
                    req.replayed = False
                guarded = True
                continue
            if self._overdue():
                conn.execute(ROLLBACK_SQL)
                self._fail_all(pending, self._overdue_error())
                return
            try:
                self._record(pending)
                conn.execute(COMMIT_SQL)
            except sqlite3.Error as exc:
                self.commit_failures += 1
                self.applied.abandoned()
                log.error("COMMIT failed for a batch of %d: %s", len(pending), exc)
                if conn.in_transaction:
                    try:
                        conn.execute(ROLLBACK_SQL)
                    except sqlite3.Error:
                        log.exception("ROLLBACK after a failed COMMIT failed")
                self._fail_all(pending, CommitFailed(f"COMMIT failed: {exc}"))
                return
            self.applied.committed()
            self.commits += 1
            self.checkpointer.commits += 1
            counted: dict[str, int] = {}
            for req in pending:
                if req.error is None:
                    name = req.name or "sql"
                    counted[name] = counted.get(name, 0) + 1
            self.ops_by_name.update(counted)
            return

    def _run_all(self, pending: list[Request], guarded: bool) -> bool:
        """Run each request; True when the pass must be discarded."""
        conn = self.conn
        execute = conn.execute
        call = self._call
        pack = self._pack
        max_result = self.config.max_frame - _REPLY_OVERHEAD
        for req in pending:
            if req.retry and req.client is not None:
                found = self.applied.lookup(req.client, req.seq) or _applied_earlier(pending, req)
                if found is not None:
                    req.encoded = found
                    req.replayed = True
                    continue
            if guarded:
                execute(SAVEPOINT_SQL)
            try:
                self._internal = False
                try:
                    if req.sql is not None:
                        req.encoded = self._run_sql(req)
                    else:
                        result = call(req)
                        try:
                            req.encoded = pack(result)
                        except Exception as exc:
                            what = type(exc).__name__
                            raise Unsendable(f"msgpack cannot encode it: {what}") from exc
                finally:
                    self._internal = True
                if len(req.encoded) > max_result:
                    # Its reply frame would be refused: fail it now, before it commits.
                    raise Unsendable(
                        f"it is {len(req.encoded)} bytes, over the frame limit of {max_result}"
                    )
                if guarded:
                    execute(RELEASE_SQL)
            except Exception as exc:
                req.encoded = None
                if self._overdue():
                    # Interrupted past transaction_timeout: the whole batch is given up.
                    self._fail_all(pending, self._overdue_error())
                    return True
                what = f"op {req.name!r}" if req.name is not None else "SQL"
                req.error = op_error(what, exc, sql=req.sql is not None)
                if not guarded or not conn.in_transaction:
                    return True
                try:
                    execute(ROLLBACK_TO_SQL)
                    execute(RELEASE_SQL)
                except sqlite3.Error:
                    return True
        return False

    def _overdue(self) -> bool:
        hold = self._hold
        return hold is not None and hold.overdue

    def _overdue_error(self) -> DeadlineExceeded:
        limit = self.config.transaction_timeout
        return DeadlineExceeded(
            f"rolled back: the batch held the write turn past transaction_timeout ({limit:g} s)"
        )

    def _record(self, pending: list[Request]) -> None:
        """Remember committed request ids (with results) in the same transaction."""
        by_client: dict[bytes, dict[int, bytes]] = {}
        for req in pending:
            client = req.client
            if client is not None and req.error is None and not req.replayed:
                results = by_client.get(client)
                if results is None:
                    results = by_client[client] = {}
                results[req.seq] = req.encoded  # type: ignore[index,assignment]
        self.applied.record(by_client)

    def _call(self, req: Request) -> Any:
        """Run a named op (checked at intake) on the write connection."""
        name = req.name
        assert name is not None
        op = self.ops.get(name)
        assert op is not None
        return op.fn(self.conn, *req.args, **req.kwargs)

    def _run_sql(self, req: Request) -> bytes:
        """Run raw SQL, confined to this database; its result comes back encoded."""
        sql = req.sql
        assert sql is not None
        self.raw_sql = True
        try:
            if req.many:  # a fresh cursor: its lastrowid stays None, as sqlite3's does
                cur = self.conn.executemany(sql, req.params)
                rows: list[Any] = []
            else:
                cur = self._cursor
                cur.execute(sql, req.params)
                rows = cur.fetchall() if cur.description else []
        finally:
            self.raw_sql = False
        if rows:
            try:
                encoded_rows = self._pack(rows)
            except Exception as exc:
                raise Unsendable(f"msgpack cannot encode it: {type(exc).__name__}") from exc
        else:
            encoded_rows = _EMPTY_LIST
        # {"rowcount": ..., "lastrowid": ..., "rows": ...}, spliced from its parts
        return b"".join(
            (
                _RESULT_ROWCOUNT,
                proto.pack_id(cur.rowcount),
                _RESULT_LASTROWID,
                proto.pack_id(cur.lastrowid),
                _RESULT_ROWS,
                encoded_rows,
            )
        )

    def note_ack(self, client: bytes, ack: int) -> None:
        """The client has seen replies for every seq below ``ack``: those ids may go."""
        self.applied.note_ack(client, ack)

    def _fail_all(self, reqs: list[Request], error: OneWriterError) -> None:
        for req in reqs:
            if req.error is None:
                req.error = error
            req.encoded = None

    def _deliver(self, batch: Sequence[Request]) -> None:
        by_sink: dict[int, list[Request]] = {}
        errors = self.errors_by_code
        for req in batch:
            if req.error is not None:
                errors[req.error.code] += 1
            requests = by_sink.get(id(req.sink))
            if requests is None:
                by_sink[id(req.sink)] = [req]
            else:
                requests.append(req)
        for requests in by_sink.values():
            sink = requests[0].sink
            try:
                sink.deliver(requests)
                sink.flush()
            except Exception:
                log.exception("delivering replies failed")

    # -- housekeeping -----------------------------------------------------------------

    def maybe_checkpoint(self, idle: bool) -> None:
        """Keep the WAL bounded (under the turn), and expire old exactly-once records."""
        checkpointer = self.checkpointer
        if not checkpointer.due(idle):
            return
        self._internal = True
        checkpointer.run()
        now = time.monotonic()
        if now - self._last_expire > 30:
            self._last_expire = now
            try:
                with self.turn.holding(self.config.request_timeout):
                    self.applied.expire(time.time() - self.config.dedup_retention)
            except (TurnTimeout, sqlite3.Error) as exc:
                log.warning("expiring exactly-once records failed: %s", exc)

    def wal_bytes(self) -> int:
        return self.checkpointer.wal_bytes()

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "sqlite_version": sqlite3.sqlite_version,
            "uptime_s": round(time.time() - self.started, 3),
            "batches": self.batches,
            "requests": self.requests,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "checkpoints": self.checkpointer.checkpoints,
            "batch_size": self.batch_sizes.percentiles(),
            "commit_ms": self.commit_ms.percentiles(),
            "ops": dict(self.ops_by_name),
            "errors": dict(self.errors_by_code),
            "wal_bytes": self.wal_bytes(),
        }

    def close(self) -> None:
        """Checkpoint what can be and close the connection."""
        self._internal = True
        self.checkpointer.final()
        self.conn.close()
