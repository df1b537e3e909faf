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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import _protocol as proto
from ._config import Config, Migration
from ._errors import (
    CommitFailed,
    DeadlineExceeded,
    OneWriterError,
    OpFailed,
    SqlNotAllowed,
)
from ._ops import Ops
from ._readonly import confine_sql, take_refusal

log = logging.getLogger("onewriter.writer")

_SQLITE_TRANSACTION = 22
_SQLITE_SAVEPOINT = 32
_STORAGE_ERRORS = {10, 13}  # SQLITE_IOERR, SQLITE_FULL (primary codes)

# The engine's own transaction statements carry a marker. sqlite3 caches prepared
# statements by their text and the authorizer runs only when one is prepared: an op's
# plain "COMMIT" must never reuse the engine's cached, already authorized statement.
BEGIN_SQL = "BEGIN IMMEDIATE /* onewriter */"
COMMIT_SQL = "COMMIT /* onewriter */"
ROLLBACK_SQL = "ROLLBACK /* onewriter */"
SAVEPOINT_SQL = "SAVEPOINT _ow /* onewriter */"
RELEASE_SQL = "RELEASE _ow /* onewriter */"
ROLLBACK_TO_SQL = "ROLLBACK TO _ow /* onewriter */"

# Exactly-once records: one row per client per batch, holding {seq: encoded result} for
# that client's writes committed in the batch (a row per request cost ~3 us each).
DEDUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS _onewriter_applied (
    client BLOB NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    results BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (client, first_seq)
) WITHOUT ROWID
"""
DEDUP_LOOKUP = (
    "SELECT results FROM _onewriter_applied WHERE client = ? AND first_seq <= ? AND last_seq >= ?"
)
DEDUP_RECORD = (
    "INSERT INTO _onewriter_applied (client, first_seq, last_seq, results, at) "
    "VALUES (?, ?, ?, ?, ?)"
)
DEDUP_ACK = "DELETE FROM _onewriter_applied WHERE client = ? AND last_seq < ?"
DEDUP_EXPIRE = "DELETE FROM _onewriter_applied WHERE at < ?"
_ACK_PRUNE_STEP = 256
_REPLY_OVERHEAD = 64  # a reply's id and keys around its result, with room to spare

# Reply bodies are spliced from pre-encoded parts: {"id": id, "ok": true, "result": ...}
_OK_HEAD = b"\x83" + proto.pack("id")
_OK_TAIL = proto.pack("ok") + proto.pack(True) + proto.pack("result")


class _Unsendable(Exception):
    """An op's result could not be encoded for its reply."""


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
    """Where a request's outcome goes: a socket connection or a waiting local caller."""

    def deliver(self, request: Request) -> None: ...

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
    )

    def __init__(
        self,
        sink: Sink,
        rid: Any,
        *,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        sql: str | None = None,
        params: Any = (),
        many: bool = False,
        deadline: float | None = None,
        client: bytes | None = None,
        seq: int | None = None,
        retry: bool = False,
    ) -> None:
        self.sink = sink
        self.rid = rid
        self.name = name
        self.args = args
        self.kwargs = kwargs or {}
        self.sql = sql
        self.params = params
        self.many = many
        self.deadline = deadline
        self.client = client
        self.seq = seq
        self.retry = retry
        self.encoded: bytes | None = None
        self.replayed = False
        self.error: OneWriterError | None = None

    def reply_body(self) -> bytes:
        """This request's reply, msgpack-encoded."""
        if self.error is not None:
            return proto.pack({"id": self.rid, "error": self.error.to_wire()})
        assert self.encoded is not None
        return _OK_HEAD + proto.pack(self.rid) + _OK_TAIL + self.encoded


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
        self.started = time.time()
        self.batches = 0
        self.requests = 0
        self.commits = 0
        self.commit_failures = 0
        self.checkpoints = 0
        self.ops_by_name: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.batch_sizes = Window()
        self.commit_ms = Window()
        self._commits_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._truncate_above = config.wal_size_limit
        self._last_expire = time.monotonic()
        self._ack_floor: dict[bytes, int] = {}
        self._acks_due: dict[bytes, int] = {}

    # -- setup ---------------------------------------------------------------------

    def prepare(self, migrations: Sequence[Migration]) -> int:
        """Create onewriter's own table and apply pending migrations; returns the version."""
        self.conn.execute(DEDUP_SCHEMA)
        version: int = self.conn.execute("PRAGMA user_version").fetchone()[0]
        for index in range(version, len(migrations)):
            migration = migrations[index]
            self._run_migration(index + 1, migration)
            log.info("applied migration %d", index + 1)
        return max(version, len(migrations))

    def _run_migration(self, version: int, migration: Migration) -> None:
        conn = self.conn
        if isinstance(migration, str):
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{migration}\n;PRAGMA user_version = {version};\nCOMMIT;"
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute(ROLLBACK_SQL)
                raise
            return
        conn.execute(BEGIN_SQL)
        try:
            migration(conn)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute(COMMIT_SQL)
        except BaseException:
            if conn.in_transaction:
                conn.execute(ROLLBACK_SQL)
            raise

    # -- the authorizer keeps ops from ending the writer's transaction ------------------

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if self._internal:
            return sqlite3.SQLITE_OK
        if action == _SQLITE_TRANSACTION:
            return sqlite3.SQLITE_DENY
        if action == _SQLITE_SAVEPOINT and arg2 is not None and arg2.startswith("_ow"):
            return sqlite3.SQLITE_DENY
        if self.raw_sql and confine_sql(action, arg1, arg2):
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
        for req in batch:
            if req.deadline is not None and req.deadline < now:
                req.error = DeadlineExceeded(
                    f"deadline passed {1000 * (now - req.deadline):.0f} ms before it could run"
                )
            else:
                runnable.append(req)
        if runnable:
            started = time.perf_counter()
            try:
                self._transaction(runnable)
            except Exception as exc:
                # A fault of the engine itself: nothing of the batch may count as applied,
                # and every request still gets its answer.
                log.exception("a batch of %d failed unexpectedly", len(runnable))
                self._abandon_transaction()
                self._fail_all(runnable, CommitFailed(f"the writer failed the batch: {exc}"))
            self.commit_ms.add(1000 * (time.perf_counter() - started))
        self._deliver(batch)

    def _abandon_transaction(self) -> None:
        self._internal = True
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
            try:
                self._record(pending)
                conn.execute(COMMIT_SQL)
            except sqlite3.Error as exc:
                self.commit_failures += 1
                log.error("COMMIT failed for a batch of %d: %s", len(pending), exc)
                if conn.in_transaction:
                    try:
                        conn.execute(ROLLBACK_SQL)
                    except sqlite3.Error:
                        log.exception("ROLLBACK after a failed COMMIT failed")
                self._fail_all(pending, CommitFailed(f"COMMIT failed: {exc}"))
                return
            self.commits += 1
            self._commits_since_checkpoint += 1
            counts = self.ops_by_name
            for req in pending:
                if req.error is None:
                    counts[req.name or "sql"] += 1
            return

    def _run_all(self, pending: list[Request], guarded: bool) -> bool:
        """Run each request; True when the pass must be discarded."""
        conn = self.conn
        execute = conn.execute
        call = self._call
        pack = proto.pack
        max_result = self.config.max_frame - _REPLY_OVERHEAD
        for req in pending:
            if req.retry and req.client is not None:
                found = self._lookup(req.client, req.seq) or _applied_earlier(pending, req)
                if found is not None:
                    req.encoded = found
                    req.replayed = True
                    continue
            if guarded:
                execute(SAVEPOINT_SQL)
            try:
                self._internal = False
                try:
                    result = call(req)
                finally:
                    self._internal = True
                try:
                    req.encoded = pack(result)
                except Exception as exc:
                    raise _Unsendable(f"msgpack cannot encode it: {type(exc).__name__}") from exc
                if len(req.encoded) > max_result:
                    # Its reply frame would be refused: fail it now, before it commits.
                    raise _Unsendable(
                        f"it is {len(req.encoded)} bytes, over the frame limit of {max_result}"
                    )
                if guarded:
                    execute(RELEASE_SQL)
            except Exception as exc:
                req.encoded = None
                req.error = self._op_error(req, exc)
                if not guarded or not conn.in_transaction:
                    return True
                try:
                    execute(ROLLBACK_TO_SQL)
                    execute(RELEASE_SQL)
                except sqlite3.Error:
                    return True
        return False

    def _lookup(self, client: bytes, seq: Any) -> bytes | None:
        """The stored reply of a write this client sent before, if it committed."""
        for (blob,) in self.conn.execute(DEDUP_LOOKUP, (client, seq, seq)):
            results = proto.unpack(blob)
            if seq in results:
                found: bytes = results[seq]
                return found
        return None

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
        if by_client:
            now = time.time()
            self.conn.executemany(
                DEDUP_RECORD,
                [
                    (client, min(results), max(results), proto.pack(results), now)
                    for client, results in by_client.items()
                ],
            )
        self._apply_acks()

    def _call(self, req: Request) -> Any:
        if req.name is not None:
            op = self.ops.get(req.name)
            assert op is not None  # checked at intake
            return op.fn(self.conn, *req.args, **req.kwargs)
        assert req.sql is not None
        conn = self.conn
        self.raw_sql = True
        try:
            if req.many:
                cur = conn.executemany(req.sql, req.params)
                return {"rowcount": cur.rowcount, "lastrowid": cur.lastrowid, "rows": []}
            cur = conn.execute(req.sql, req.params)
            rows = cur.fetchall() if cur.description else []
        finally:
            self.raw_sql = False
        return {"rowcount": cur.rowcount, "lastrowid": cur.lastrowid, "rows": rows}

    def _op_error(self, req: Request, exc: Exception) -> OneWriterError:
        what = f"op {req.name!r}" if req.name is not None else "SQL"
        if isinstance(exc, sqlite3.DatabaseError):
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in _STORAGE_ERRORS:
                return CommitFailed(f"{what}: storage error, nothing applied: {exc}")
            refusal = take_refusal(exc)
            if refusal is not None and req.sql is not None:
                return SqlNotAllowed(
                    f"SQL may write this database but not reach other files or change the "
                    f"writer's shared connection; refused: {refusal.reason}"
                )
            if "not authorized" in str(exc):
                return OpFailed(
                    f"{what} tried to control the transaction: ops run inside the writer's "
                    "transaction and must not BEGIN, COMMIT, ROLLBACK or RELEASE it"
                )
        if isinstance(exc, _Unsendable):
            return OpFailed(f"{what} returned a result that cannot be sent: {exc}")
        return OpFailed(f"{what} raised {type(exc).__name__}: {exc}")

    def note_ack(self, client: bytes, ack: int) -> None:
        """The client has seen replies for every seq below ``ack``: those ids may go."""
        if ack - self._ack_floor.get(client, 0) >= _ACK_PRUNE_STEP:
            self._ack_floor[client] = ack
            self._acks_due[client] = ack

    def _apply_acks(self) -> None:
        if self._acks_due:
            due, self._acks_due = self._acks_due, {}
            self.conn.executemany(DEDUP_ACK, due.items())

    def _fail_all(self, reqs: list[Request], error: OneWriterError) -> None:
        for req in reqs:
            if req.error is None:
                req.error = error
            req.encoded = None

    def _deliver(self, batch: Sequence[Request]) -> None:
        sinks: dict[int, Sink] = {}
        errors = self.errors_by_code
        for req in batch:
            if req.error is not None:
                errors[req.error.code] += 1
            sink = req.sink
            sinks[id(sink)] = sink
            try:
                sink.deliver(req)
            except Exception:
                log.exception("delivering a reply failed")
        for sink in sinks.values():
            try:
                sink.flush()
            except Exception:
                log.exception("flushing replies failed")

    # -- housekeeping -----------------------------------------------------------------

    def maybe_checkpoint(self, idle: bool) -> None:
        """Keep the WAL bounded: PASSIVE often, TRUNCATE when it grew past its limit."""
        if self.config.checkpoint != "writer" or self._commits_since_checkpoint == 0:
            return
        now = time.monotonic()
        # The WAL grows past its limit between scheduled checkpoints when batches are big
        # or readers overlap without a break (then only TRUNCATE can restart it).
        due = (
            self.wal_bytes() > self._truncate_above
            or self._commits_since_checkpoint >= self.config.checkpoint_every
            or (idle and now - self._last_checkpoint > 0.2)
        )
        if not due:
            return
        self._commits_since_checkpoint = 0
        self._last_checkpoint = now
        self._internal = True
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            wal = self.wal_bytes()
            if wal > self._truncate_above:
                busy = self.truncate_wal()[0]
                # A reader outlasted the wait: try again once the WAL has grown by another
                # half of its limit, rather than stall the writer on every batch.
                limit = self.config.wal_size_limit
                self._truncate_above = wal + limit // 2 if busy else limit
        except sqlite3.Error as exc:
            log.warning("checkpoint failed: %s", exc)
        if now - self._last_expire > 30:
            self._last_expire = now
            self.conn.execute(DEDUP_EXPIRE, (time.time() - self.config.dedup_retention,))

    def truncate_wal(self, wait_ms: int = 200) -> tuple[int, int, int]:
        """Checkpoint everything and truncate the WAL, waiting a little for readers."""
        conn = self.conn
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
        self.checkpoints += 1
        return (int(row[0]), int(row[1]), int(row[2]))

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def stats(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "sqlite_version": sqlite3.sqlite_version,
            "uptime_s": round(time.time() - self.started, 3),
            "batches": self.batches,
            "requests": self.requests,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "checkpoints": self.checkpoints,
            "batch_size": self.batch_sizes.percentiles(),
            "commit_ms": self.commit_ms.percentiles(),
            "ops": dict(self.ops_by_name),
            "errors": dict(self.errors_by_code),
            "wal_bytes": self.wal_bytes(),
        }

    def close(self, on_close: Callable[[], None] | None = None) -> None:
        """Checkpoint what can be and close the connection."""
        if self.config.checkpoint == "writer":
            try:
                self._internal = True
                self.truncate_wal(wait_ms=100)
            except sqlite3.Error as exc:
                log.info("final checkpoint skipped: %s", exc)
        self.conn.close()
        if on_close is not None:
            on_close()
