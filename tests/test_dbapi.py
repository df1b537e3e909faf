"""onewriter.dbapi behaves like the standard sqlite3 module, over onewriter.

Reads outside a transaction run on this process's readers, writes go to the writer and
commit on their own, and inside a transaction every statement runs on the writer.
"""

from __future__ import annotations

import sqlite3 as stdlib_sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import onewriter
import onewriter.dbapi as sqlite3

SCHEMA = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, n INTEGER)"


@pytest.fixture(autouse=True)
def _close_shared() -> Iterator[None]:
    yield
    sqlite3.close_all()


@pytest.fixture
def db(db_path: str) -> Iterator[onewriter.Database]:
    """The application's own Database (the writer lives in this process)."""
    database = onewriter.connect(db_path)
    try:
        database.execute_write(SCHEMA)
        yield database
    finally:
        database.close()


@pytest.fixture
def conn(db: onewriter.Database) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(db)
    try:
        yield connection
    finally:
        connection.close()


def committed(db_path: str, sql: str = "SELECT name FROM items ORDER BY id") -> list[Any]:
    """What another process would see: a plain stdlib connection to the file."""
    plain = stdlib_sqlite3.connect(db_path, timeout=10)
    try:
        return [row[0] for row in plain.execute(sql)]
    finally:
        plain.close()


def writer_requests(db: onewriter.Database) -> int:
    return int(db.stats()["requests"])


# -- module face ---------------------------------------------------------------------------


def test_module_attributes_and_error_tree() -> None:
    assert (sqlite3.apilevel, sqlite3.threadsafety, sqlite3.paramstyle) == ("2.0", 1, "qmark")
    assert sqlite3.sqlite_version == stdlib_sqlite3.sqlite_version
    assert sqlite3.SQLITE_CONSTRAINT == stdlib_sqlite3.SQLITE_CONSTRAINT
    assert issubclass(sqlite3.IntegrityError, sqlite3.DatabaseError)
    assert issubclass(sqlite3.DatabaseError, sqlite3.Error)
    # Code catching the standard module's classes keeps working.
    assert issubclass(sqlite3.OperationalError, stdlib_sqlite3.OperationalError)
    assert issubclass(sqlite3.IntegrityError, stdlib_sqlite3.IntegrityError)
    assert len(set(sqlite3.__all__)) == len(sqlite3.__all__)
    assert all(hasattr(sqlite3, name) for name in sqlite3.__all__)


# -- outside a transaction -------------------------------------------------------------------


def test_read_runs_on_local_readers(db: onewriter.Database, conn: sqlite3.Connection) -> None:
    db.execute_write("INSERT INTO items (name, n) VALUES ('a', 1)")
    before = writer_requests(db)
    cursor = conn.execute("SELECT name, n FROM items WHERE n = ?", (1,))
    assert cursor.fetchall() == [("a", 1)]
    assert [d[0] for d in cursor.description] == ["name", "n"]
    assert cursor.rowcount == -1
    empty = conn.execute("SELECT id, name FROM items WHERE 0")
    assert empty.fetchall() == []
    assert [d[0] for d in empty.description] == ["id", "name"]
    assert writer_requests(db) == before
    assert not conn.in_transaction


def test_read_is_not_held_up_by_a_transaction_on_the_writer(
    db: onewriter.Database, conn: sqlite3.Connection
) -> None:
    holder = sqlite3.connect(db, transaction_timeout=30.0)
    try:
        holder.execute("INSERT INTO items (name) VALUES ('uncommitted')")
        assert holder.in_transaction
        # The writer belongs to ``holder`` now; this read does not need it.
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        holder.rollback()
    finally:
        holder.close()


def test_autocommit_write_commits_on_its_own(db_path: str, db: onewriter.Database) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    before = writer_requests(db)
    cursor = conn.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("a", 1))
    assert (cursor.rowcount, cursor.lastrowid) == (1, 1)
    assert not conn.in_transaction
    assert committed(db_path) == ["a"]
    cursor = conn.execute("UPDATE items SET n = n + 1 WHERE n >= ?", (0,))
    assert cursor.rowcount == 1
    assert cursor.lastrowid == 1  # the connection's last insert, as SQLite reports it
    cursor = conn.executemany("INSERT INTO items (name) VALUES (?)", [("b",), ("c",)])
    assert cursor.rowcount == 2
    assert committed(db_path) == ["a", "b", "c"]
    assert writer_requests(db) == before + 3
    conn.close()


def test_ddl_outside_a_transaction_commits_at_once(db_path: str, conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE extra (x)")
    assert not conn.in_transaction
    assert "extra" in committed(db_path, "SELECT name FROM sqlite_master")


def test_returning_outside_a_transaction_has_a_description(
    db_path: str, db: onewriter.Database
) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    cursor = conn.execute("INSERT INTO items (name) VALUES ('r') RETURNING id, name")
    assert [d[0] for d in cursor.description] == ["id", "name"]
    assert cursor.fetchall() == [(1, "r")]
    assert not conn.in_transaction
    assert committed(db_path) == ["r"]
    conn.close()


def test_with_statement_a_write_is_recognised_on_a_reader(
    db_path: str, db: onewriter.Database
) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("WITH v(x) AS (VALUES ('w')) INSERT INTO items (name) SELECT x FROM v")
    assert committed(db_path) == ["w"]
    conn.close()


# -- errors ------------------------------------------------------------------------------------


def test_errors_carry_sqlite_message_class_and_code(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such table: nope") as read_error:
        conn.execute("SELECT * FROM nope")
    assert read_error.value.code == "OP_FAILED"
    with pytest.raises(sqlite3.OperationalError, match="table items already exists") as ddl:
        conn.execute(SCHEMA)
    assert ddl.value.code == "OP_FAILED"
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        conn.execute("INSERT INTO items VALUES ((()")
    assert not conn.in_transaction
    conn.execute("INSERT INTO items (name) VALUES ('a')")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed") as unique:
        conn.execute("INSERT INTO items (name) VALUES ('a')")
    assert unique.value.code == "OP_FAILED"
    assert unique.value.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE"
    assert isinstance(unique.value, stdlib_sqlite3.IntegrityError)
    with pytest.raises(sqlite3.ProgrammingError, match="one statement at a time"):
        conn.execute("SELECT 1; SELECT 2")
    with pytest.raises(sqlite3.ProgrammingError, match="bindings"):
        conn.execute("SELECT ?")


def test_a_failing_statement_does_not_disturb_other_clients(
    db_path: str, db: onewriter.Database, conn: sqlite3.Connection
) -> None:
    other = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO items (name) VALUES (NULL)")
    other.execute("INSERT INTO items (name) VALUES ('fine')")
    assert committed(db_path) == ["fine"]
    other.close()


# -- transactions ------------------------------------------------------------------------------


def test_implicit_transaction_reads_its_own_writes(
    db_path: str, db: onewriter.Database, conn: sqlite3.Connection
) -> None:
    other = sqlite3.connect(db)
    conn.execute("INSERT INTO items (name, n) VALUES ('a', 1)")
    assert conn.in_transaction
    assert conn.execute("SELECT name FROM items").fetchall() == [("a",)]
    assert other.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert committed(db_path) == []
    conn.commit()
    assert not conn.in_transaction
    assert other.execute("SELECT name FROM items").fetchall() == [("a",)]
    assert committed(db_path) == ["a"]
    other.close()


def test_rollback_and_context_manager(db_path: str, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO items (name) VALUES ('rolled back')")
    conn.rollback()
    assert not conn.in_transaction
    with conn:
        conn.execute("INSERT INTO items (name) VALUES ('kept')")
    with pytest.raises(ZeroDivisionError), conn:
        conn.execute("INSERT INTO items (name) VALUES ('discarded')")
        raise ZeroDivisionError
    assert committed(db_path) == ["kept"]


def test_constraint_error_keeps_the_transaction(db_path: str, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO items (name) VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO items (name) VALUES ('a')")
    assert conn.in_transaction
    conn.execute("INSERT INTO items (name) VALUES ('b')")
    conn.commit()
    assert committed(db_path) == ["a", "b"]


def test_explicit_begin_savepoints_and_sql_commit(db_path: str, db: onewriter.Database) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    assert conn.in_transaction
    # Inside the transaction even a read runs on the writer.
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        conn.execute("BEGIN")
    conn.execute("INSERT INTO items (name) VALUES ('a')")
    conn.execute("SAVEPOINT sp")
    conn.execute("INSERT INTO items (name) VALUES ('b')")
    conn.execute("ROLLBACK TO sp")
    conn.execute("RELEASE sp")
    conn.execute("COMMIT")
    assert not conn.in_transaction
    assert committed(db_path) == ["a"]
    with pytest.raises(sqlite3.OperationalError, match="no transaction is active"):
        conn.execute("COMMIT")
    conn.close()


def test_setting_isolation_level_to_none_commits(db_path: str, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO items (name) VALUES ('a')")
    conn.isolation_level = None
    assert not conn.in_transaction
    assert committed(db_path) == ["a"]
    with pytest.raises(ValueError):
        conn.isolation_level = "SOMETIMES"


def test_executescript_commits_first_and_runs_its_own_transactions(
    db_path: str, conn: sqlite3.Connection
) -> None:
    conn.execute("INSERT INTO items (name) VALUES ('before')")
    conn.executescript(
        """
        -- a script with its own transaction
        BEGIN;
        INSERT INTO items (name) VALUES ('s1');
        INSERT INTO items (name) VALUES ('s2;with semicolon');
        COMMIT;
        CREATE TABLE scripted (x);
        """
    )
    assert not conn.in_transaction
    assert committed(db_path) == ["before", "s1", "s2;with semicolon"]


def test_close_rolls_back(db_path: str, db: onewriter.Database) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items (name) VALUES ('lost')")
    conn.close()
    assert committed(db_path) == []
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        conn.execute("SELECT 1")
    db.execute_write("INSERT INTO items (name) VALUES ('writer is free')")


# -- rows, parameters, settings ----------------------------------------------------------------


def test_row_factories_and_named_parameters(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO items (name, n) VALUES (:name, :n)", {"name": "a", "n": 7})
    conn.row_factory = stdlib_sqlite3.Row  # the standard Row works as well
    row = conn.execute("SELECT name, n FROM items").fetchone()
    assert (row["NAME"], row["n"], row.keys(), tuple(row)) == ("a", 7, ["name", "n"], ("a", 7))
    conn.commit()
    conn.row_factory = lambda cursor, values: dict(
        zip([d[0] for d in cursor.description], values, strict=True)
    )
    assert conn.execute("SELECT name, n FROM items").fetchall() == [{"name": "a", "n": 7}]
    conn.row_factory = None
    conn.text_factory = bytes
    assert conn.execute("SELECT name FROM items").fetchone() == (b"a",)


def test_adapted_parameters_reach_the_writer(db_path: str, conn: sqlite3.Connection) -> None:
    class Point:
        def __conform__(self, protocol: Any) -> str:
            return "1;2"

    conn.execute("INSERT INTO items (name, n) VALUES (?, ?)", (Point(), True))
    conn.execute("INSERT INTO items (name) VALUES (?)", (memoryview(b"blob"),))
    with pytest.raises(sqlite3.ProgrammingError, match="not supported"):
        conn.execute("INSERT INTO items (name) VALUES (?)", (object(),))
    conn.commit()
    assert committed(db_path, "SELECT name FROM items ORDER BY id") == ["1;2", b"blob"]
    assert committed(db_path, "SELECT n FROM items WHERE id = 1") == [1]


def test_connection_settings_are_answered_not_changed(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("wal",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.execute("PRAGMA query_only = 1")
    conn.execute("INSERT INTO items (name) VALUES ('still writable')")
    conn.commit()
    assert conn.execute("PRAGMA table_info(items)").fetchall()[1][1] == "name"


def test_user_version_pragma_goes_to_the_writer(db_path: str, conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA user_version = 42")
    assert committed(db_path, "PRAGMA user_version") == [42]


def test_unsupported_statements_say_why(conn: sqlite3.Connection) -> None:
    for sql in ("ATTACH 'x.db' AS x", "CREATE TEMP TABLE t (x)", "VACUUM"):
        with pytest.raises(sqlite3.NotSupportedError):
            conn.execute(sql)
    with pytest.raises(sqlite3.NotSupportedError, match="create_aggregate"):
        conn.create_aggregate("agg", 1, object)


def test_functions_are_registered_on_readers(conn: sqlite3.Connection) -> None:
    conn.create_function("twice", 1, lambda x: 2 * x, deterministic=True)
    assert conn.execute("SELECT twice(21)").fetchone() == (42,)


def test_same_thread_check(db: onewriter.Database) -> None:
    conn = sqlite3.connect(db)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            conn.execute("SELECT 1")
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(10)
    assert len(errors) == 1
    shared = sqlite3.connect(db, check_same_thread=False)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(shared.execute("SELECT 2").fetchone()))
    thread.start()
    thread.join(10)
    assert results == [(2,)]
    conn.close()
    shared.close()


# -- opening ------------------------------------------------------------------------------------


def test_path_memory_and_read_only(db_path: str, tmp_path: Any) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("INSERT INTO t VALUES (2)")
    reader.close()
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        sqlite3.connect(str(tmp_path / "missing" / "x.db"))
    first, second = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    first.execute("CREATE TABLE only_here (x)")
    tables = second.execute("SELECT count(*) FROM sqlite_master WHERE name = 'only_here'")
    assert tables.fetchone() == (0,)
    first.close()
    second.close()
