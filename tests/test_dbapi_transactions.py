"""Interactive transactions on the writer: one at a time, bounded in time, rolled back
when their client goes away, lost (never half-applied) when the writer dies."""

from __future__ import annotations

import os
import sqlite3 as stdlib_sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import MIGRATIONS, PYTHON, Children, RawClient, create_post, ops, socket_path_for

import onewriter
import onewriter.dbapi as sqlite3
from onewriter import _protocol as proto


@pytest.fixture(autouse=True)
def _close_shared() -> Iterator[None]:
    yield
    sqlite3.close_all()


def titles(db_path: str) -> list[str]:
    plain = stdlib_sqlite3.connect(db_path, timeout=10)
    try:
        return [row[0] for row in plain.execute("SELECT title FROM posts ORDER BY id")]
    finally:
        plain.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


class Background:
    """A call on another thread, whose outcome the test inspects."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self, timeout: float = 20.0) -> Any:
        assert self.done.wait(timeout), "the background call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def test_other_requests_wait_queued_and_bounded(db_path: str) -> None:
    db = onewriter.connect(
        db_path,
        ops=ops,
        migrations=MIGRATIONS,
        max_pending=2,
        transaction_timeout=30.0,
        writes="funnel",  # queued at the writer (a direct write waits for the turn instead)
    )
    try:
        holder = sqlite3.connect(db, check_same_thread=False)
        holder.execute("INSERT INTO posts (title) VALUES ('from the transaction')")
        queued = [
            Background(lambda i=i: db.write(create_post, title=f"queued {i}")) for i in (1, 2)
        ]
        wait_until(lambda: db.stats()["pending"] == 2)
        # The queue is at max_pending: the next request is refused at once.
        with pytest.raises(onewriter.QueueFull):
            db.write(create_post, title="refused")
        other = sqlite3.connect(db, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError) as refused:
            other.execute("INSERT INTO posts (title) VALUES ('refused too')")
        assert refused.value.code == "QUEUE_FULL"
        # The transaction's own statements still run while the others wait.
        assert holder.execute("SELECT count(*) FROM posts").fetchone() == (1,)
        assert not any(call.done.is_set() for call in queued)
        holder.commit()
        for call in queued:
            call.join()
        assert titles(db_path) == ["from the transaction", "queued 1", "queued 2"]
        stats = db.stats()["transactions"]
        assert (stats["begun"], stats["committed"], stats["open_ms"]) == (1, 1, None)
        holder.close()
        other.close()
    finally:
        db.close()


def test_a_transaction_waits_for_the_one_before(db_path: str) -> None:
    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS, transaction_timeout=30.0)
    try:
        first = sqlite3.connect(db)
        second = sqlite3.connect(db, check_same_thread=False)
        first.execute("INSERT INTO posts (title) VALUES ('first')")
        begin = Background(lambda: second.execute("INSERT INTO posts (title) VALUES ('second')"))
        wait_until(lambda: db.stats()["transactions"]["waiting"] == 1)
        first.execute("UPDATE posts SET content = 'seen alone' WHERE title = 'first'")
        assert not begin.done.is_set()
        first.commit()
        begin.join()
        # The second transaction reads the first one's committed row.
        assert second.execute("SELECT content FROM posts").fetchall() == [("seen alone",), (None,)]
        second.commit()
        assert titles(db_path) == ["first", "second"]
        first.close()
        second.close()
    finally:
        db.close()


def test_transaction_timeout_rolls_back_and_names_it(db_path: str) -> None:
    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS, transaction_timeout=0.5)
    try:
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO posts (title) VALUES ('too slow')")
        started = time.monotonic()
        # Queued behind the transaction; it runs once the writer gave up on it.
        db.write(create_post, title="after the timeout")
        assert time.monotonic() - started < 20
        with pytest.raises(sqlite3.OperationalError, match="transaction_timeout") as timed_out:
            conn.execute("SELECT count(*) FROM posts")
        assert timed_out.value.code == "TIMEOUT"
        assert not conn.in_transaction
        assert titles(db_path) == ["after the timeout"]
        assert db.stats()["transactions"]["timed_out"] == 1
        # The connection carries on with a new transaction.
        conn.execute("INSERT INTO posts (title) VALUES ('quick')")
        conn.commit()
        assert titles(db_path) == ["after the timeout", "quick"]
        conn.close()
    finally:
        db.close()


def test_transactions_belong_to_their_connection(db_path: str) -> None:
    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS, transaction_timeout=30.0)
    try:
        path = socket_path_for(db_path, db.config)
        with RawClient(path) as owner, RawClient(path) as intruder:
            owner.send({"id": 1, "t": "tx_begin", "sql": "INSERT INTO posts (title) VALUES ('x')"})
            began = owner.recv_id(1)["result"]
            assert (began["rowcount"], began["open"]) == (1, True)
            intruder.send({"id": 1, "t": "tx_exec", "tx": began["tx"], "sql": "DELETE FROM posts"})
            assert intruder.recv_id(1)["error"]["code"] == "BAD_REQUEST"
            owner.send({"id": 2, "t": "tx_exec", "tx": began["tx"], "sql": "COMMIT"})
            refused = owner.recv_id(2)["result"]
            assert "not authorized" in refused["error"]["message"] and refused["open"]
            owner.send({"id": 3, "t": "tx_exec", "tx": began["tx"], "sql": "SELECT title"})
            assert owner.recv_id(3)["result"]["error"]["type"] == "OperationalError"
        # The owner went away without committing: rolled back, the writer moves on.
        db.write(create_post, title="next")
        assert titles(db_path) == ["next"]
        assert db.stats()["transactions"]["abandoned"] == 1
    finally:
        db.close()


# -- other processes -------------------------------------------------------------------------


def main_hold_transaction(database: str) -> None:
    """Child: open a transaction, say so, and wait (to be killed inside it)."""
    conn = sqlite3.connect(database, role="client")
    conn.execute("INSERT INTO posts (title) VALUES ('orphan')")
    print("IN_TX", flush=True)
    sys.stdin.readline()


def test_client_killed_inside_a_transaction(db_path: str, children: Children) -> None:
    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS, transaction_timeout=60.0)
    try:
        code = "import sys, test_dbapi_transactions as t; t.main_hold_transaction(sys.argv[1])"
        child = children.start([PYTHON, "-c", code, db_path])
        child.wait_line("IN_TX")
        assert db.stats()["transactions"]["open_ms"] is not None
        child.kill9()
        started = time.monotonic()
        db.write(create_post, title="after the client died")
        # Well before transaction_timeout (60 s): the disconnect ended it.
        assert time.monotonic() - started < 20
        assert titles(db_path) == ["after the client died"]
        assert db.stats()["transactions"]["abandoned"] == 1
    finally:
        db.close()


def test_writer_killed_inside_a_transaction(db_path: str, children: Children) -> None:
    first = children.writer(db_path)
    conn = sqlite3.connect(db_path, role="client", failover_timeout=20.0)
    conn.execute("INSERT INTO posts (title) VALUES ('never committed')")
    assert conn.execute("SELECT count(*) FROM posts").fetchone() == (1,)
    first.kill9()
    children.writer(db_path)
    with pytest.raises(sqlite3.OperationalError, match="lost, nothing of it applied"):
        conn.execute("INSERT INTO posts (title) VALUES ('after the writer died')")
    assert not conn.in_transaction
    conn.execute("INSERT INTO posts (title) VALUES ('on the new writer')")
    conn.commit()
    assert titles(db_path) == ["on the new writer"]
    conn.close()


def test_a_draining_writer_lets_the_open_transaction_finish(
    db_path: str, children: Children
) -> None:
    writer = children.writer(db_path)
    conn = sqlite3.connect(db_path, role="client", failover_timeout=20.0)
    conn.execute("INSERT INTO posts (title) VALUES ('begun before the drain')")
    writer.proc.terminate()  # SIGTERM: the writer drains

    def refuses_new_clients() -> bool:
        try:
            RawClient(writer.socket_path, timeout=2.0).close()
        except OSError:
            return True
        return False

    wait_until(refuses_new_clients)
    conn.execute("INSERT INTO posts (title) VALUES ('during the drain')")
    conn.commit()
    writer.wait_line("STOPPED")
    assert titles(db_path) == ["begun before the drain", "during the drain"]
    conn.close()


def test_a_commit_sent_again_is_recognised(db_path: str) -> None:
    """A client whose commit reply was lost sends it again (to the next writer, as a
    retry): the commit recorded in the same transaction is confirmed, not reported lost."""
    db = onewriter.connect(db_path, ops=ops, migrations=MIGRATIONS)
    try:
        path = socket_path_for(db_path, db.config)
        client = os.urandom(16)

        def connect() -> RawClient:
            raw = RawClient(path, hello=False)
            raw.send({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": client})
            raw.recv()
            return raw

        with connect() as first:
            first.send(
                {"id": 1, "t": "tx_begin", "sql": "INSERT INTO posts (title) VALUES ('once')"}
            )
            txid = first.recv_id(1)["result"]["tx"]
            first.send({"id": 2, "t": "tx_commit", "tx": txid, "seq": 2})
            assert first.recv_id(2) == {"id": 2, "ok": True, "result": None}
        with connect() as again:
            again.send({"id": 3, "t": "tx_commit", "tx": txid, "seq": 2, "retry": True})
            assert again.recv_id(3) == {"id": 3, "ok": True, "result": None}
            again.send({"id": 4, "t": "tx_commit", "tx": txid, "seq": 3, "retry": True})
            assert again.recv_id(4)["error"]["code"] == "BAD_REQUEST"
        assert titles(db_path) == ["once"]
    finally:
        db.close()
