"""The write turn under onewriter.dbapi: when a connection takes it, that every way a
transaction ends gives it back, and what other processes see meanwhile."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import PYTHON, Children

import onewriter.dbapi as sqlite3
from onewriter.turn import turn_for

HOLDER = """
import sys, onewriter.dbapi as sqlite3
conn = sqlite3.connect(sys.argv[1], transaction_timeout=60)
conn.execute("INSERT INTO t VALUES (1)")
print("HOLDING", flush=True)
sys.stdin.readline()
conn.commit()
print("COMMITTED", flush=True)
sys.stdin.readline()
"""
SLOW_INSERT = (
    "INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    "SELECT pause() FROM n LIMIT 100"
)


def holds(conn: sqlite3.Connection) -> bool:
    gate = conn._gate
    assert gate is not None
    return gate.hold is not None


@pytest.fixture
def conn(db_path: str) -> sqlite3.Connection:
    c = sqlite3.connect(db_path)
    c.execute("CREATE TABLE t (a)")
    return c


def test_an_implicit_transaction_takes_the_turn_at_its_first_write(
    conn: sqlite3.Connection,
) -> None:
    assert not holds(conn)  # the DDL committed on its own and gave it back
    conn.execute("SELECT * FROM t").fetchall()
    assert not holds(conn)
    conn.execute("INSERT INTO t VALUES (1)")
    assert holds(conn) and conn.in_transaction
    conn.execute("SELECT * FROM t").fetchall()
    conn.commit()
    assert not holds(conn)


@pytest.mark.parametrize(
    "end",
    [
        lambda c: c.commit(),
        lambda c: c.rollback(),
        lambda c: c.execute("COMMIT"),
        lambda c: c.execute("ROLLBACK"),
        lambda c: c.executescript("SELECT 1"),  # commits first, as the standard module
        lambda c: setattr(c, "isolation_level", None),
        lambda c: c.close(),
    ],
)
def test_every_end_of_a_transaction_gives_the_turn_back(
    conn: sqlite3.Connection, end: object
) -> None:
    conn.execute("BEGIN")
    assert holds(conn)  # an explicit BEGIN takes it at once
    conn.execute("INSERT INTO t VALUES (1)")
    end(conn)  # type: ignore[operator]
    assert not holds(conn)
    assert turn_for(conn._gate.turn.path.removesuffix(".onewriter.turn")).held() is None  # type: ignore[union-attr]


def test_context_manager_and_errors_give_the_turn_back(conn: sqlite3.Connection) -> None:
    with pytest.raises(ZeroDivisionError), conn:
        conn.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError
    assert not holds(conn)
    conn.isolation_level = None
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("CREATE TABLE u (a NOT NULL)")
        conn.execute("INSERT INTO u VALUES (NULL)")
    assert not holds(conn)
    with conn:
        conn.execute("INSERT INTO t VALUES (2)")
    assert not holds(conn)


def test_explicit_begin_runs_as_begin_immediate(conn: sqlite3.Connection) -> None:
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    conn.isolation_level = None
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT s")
    conn.execute("RELEASE s")
    conn.execute("COMMIT")
    conn.isolation_level = ""
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert traced[:4] == ["BEGIN IMMEDIATE", "SAVEPOINT s", "RELEASE s", "COMMIT"]
    assert traced[4] == "BEGIN IMMEDIATE"
    assert conn.isolation_level == ""  # as set


def test_a_write_returning_rows_in_autocommit_commits_before_its_rows_are_read(
    db_path: str, conn: sqlite3.Connection
) -> None:
    conn.isolation_level = None
    cursor = conn.execute("INSERT INTO t VALUES (7), (8) RETURNING a")
    assert not holds(conn)
    other = sqlite3.connect(db_path, timeout=0)
    assert other.execute("SELECT count(*) FROM t").fetchone() == (2,)
    other.execute("INSERT INTO t VALUES (9)")  # no lock left behind
    other.commit()
    assert cursor.fetchone() == (7,)
    assert cursor.fetchall() == [(8,)]
    assert cursor.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert type(cursor) is sqlite3.Cursor


def test_temp_tables_and_reads_in_another_thread_do_not_wait(
    db_path: str, conn: sqlite3.Connection
) -> None:
    conn.execute("INSERT INTO t VALUES (1)")  # holds the turn
    results: list[object] = []

    def other_thread() -> None:
        c = sqlite3.connect(db_path, timeout=0.2)
        results.append(c.execute("SELECT count(*) FROM t").fetchone())
        try:
            c.execute("INSERT INTO t VALUES (2)")
        except sqlite3.OperationalError as exc:
            results.append((type(exc).__name__, getattr(exc, "code", None)))
        c.close()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert results == [(0,), ("TurnBusy", "TIMEOUT")]
    conn.commit()


def test_a_transaction_past_its_timeout_is_rolled_back(db_path: str) -> None:
    conn = sqlite3.connect(db_path, transaction_timeout=0.3)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("INSERT INTO t VALUES (1)")
    time.sleep(0.5)
    with pytest.raises(sqlite3.TransactionTimeout, match="transaction_timeout"):
        conn.commit()
    assert not holds(conn) and not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    # A statement still running past the limit is interrupted.
    conn.create_function("pause", 0, lambda: time.sleep(0.05))
    conn.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(sqlite3.TransactionTimeout):
        conn.execute(SLOW_INSERT)
    assert not holds(conn) and not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.close()


def test_another_process_waits_for_the_turn_and_a_killed_holder_frees_it(
    db_path: str, conn: sqlite3.Connection, children: Children
) -> None:
    conn.commit()
    holder = children.start([PYTHON, "-c", HOLDER, db_path])
    holder.wait_line("HOLDING")
    with pytest.raises(sqlite3.TurnBusy, match="database is locked"):
        sqlite3.connect(db_path, timeout=0.2).execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)  # reads go on
    holder.send("GO")
    holder.wait_line("COMMITTED")
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    holder2 = children.start([PYTHON, "-c", HOLDER, db_path])
    holder2.wait_line("HOLDING")
    waiter = sqlite3.connect(db_path, timeout=10)
    started = time.monotonic()
    killer = threading.Timer(0.3, holder2.kill9)
    killer.start()
    waiter.execute("INSERT INTO t VALUES (3)")  # taken over from the dead holder
    waiter.commit()
    assert 0.2 < time.monotonic() - started < 5
    assert waiter.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,), (3,)]
    waiter.close()


def test_statements_with_parameters_are_classified_once(conn: sqlite3.Connection) -> None:
    """The EXPLAIN that tells a write binds NULLs: adapters are not called for it, and
    its answer is kept for the statement's text."""
    from onewriter.dbapi import _classify

    adapted: list[object] = []

    class Point:
        def __conform__(self, protocol: object) -> str:
            adapted.append(self)
            return "1;2"

    select = "SELECT a FROM t WHERE a = ? OR a = ?"
    named = "SELECT a FROM t WHERE a = :x"
    conn.execute(select, (Point(), 2)).fetchall()
    conn.execute(named, {"x": 1}).fetchall()
    assert len(adapted) == 1
    assert _classify.known[select] is _classify.Kind.READ
    assert _classify.known[named] is _classify.Kind.READ
    conn.execute("UPDATE t SET a = ? WHERE a = ?", (1, 2))
    assert holds(conn)
    conn.rollback()


def test_a_transaction_ended_on_another_thread_gives_the_turn_back_later(db_path: str) -> None:
    """The turn is a per-thread lock: a transaction committed on another thread leaves it
    with the thread that took it, which gives it back before it next takes it."""
    conn = sqlite3.connect(db_path, check_same_thread=False)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("INSERT INTO t VALUES (1)")
    gate = conn._gate
    assert gate is not None
    committer = threading.Thread(target=conn.commit)
    committer.start()
    committer.join()
    assert not holds(conn) and gate.turn.held() is not None  # stranded with this thread
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    assert gate.turn.held() is None
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    conn.close()
