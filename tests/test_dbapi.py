"""onewriter.dbapi against the standard module: the same answers, natively.

Each connection is a real ``sqlite3.Connection``; these tests compare it with the
standard module on what the earlier emulation got silently wrong, and check the
connection-bound API works.
"""

from __future__ import annotations

import os
import sqlite3 as stdlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import onewriter
import onewriter.dbapi as sqlite3


def outcome(connect: Callable[..., Any], database: str, sql: str, *args: Any) -> Any:
    """What running ``sql`` gives: its rows, or the name of the error class."""
    conn = connect(database, *args)
    try:
        return conn.execute(sql).fetchall()
    except stdlib.Error as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_module_is_the_standard_module_s_face() -> None:
    assert (sqlite3.apilevel, sqlite3.paramstyle) == ("2.0", "qmark")
    assert sqlite3.threadsafety == stdlib.threadsafety
    assert sqlite3.OperationalError is stdlib.OperationalError
    assert sqlite3.Row is stdlib.Row
    assert issubclass(sqlite3.Connection, stdlib.Connection)
    assert issubclass(sqlite3.TurnBusy, sqlite3.OperationalError)
    assert sqlite3.TurnBusy.code == sqlite3.TransactionTimeout.code == "TIMEOUT"


@pytest.mark.parametrize(
    "sql",
    [
        "(SELECT 1) UNION (SELECT 2)",
        "(garbage here",
        "(INSERT INTO t VALUES (3))",
        ";SELECT 1",
        "SELECT 1;",
        "  /* comment */ SELECT 2",
        "WITH q AS (SELECT 4) SELECT * FROM q",
        "VALUES (5)",
    ],
)
def test_odd_statements_run_as_in_the_standard_module(tmp_path: Path, sql: str) -> None:
    for name in ("std.db", "ow.db"):
        plain = stdlib.connect(tmp_path / name)
        plain.execute("CREATE TABLE t (a)")
        plain.close()
    expected = outcome(stdlib.connect, str(tmp_path / "std.db"), sql)
    assert outcome(sqlite3.connect, str(tmp_path / "ow.db"), sql) == expected


def test_schema_changes_are_seen_at_once(tmp_path: Path) -> None:
    """Pragmas read right after DDL see it (SQLAlchemy reflects this way)."""
    results = []
    for module, name in ((stdlib, "std.db"), (sqlite3, "ow.db")):
        conn = module.connect(tmp_path / name)
        seen = [conn.execute('PRAGMA main.table_info("s")').fetchall()]
        conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE s (a UNIQUE, p REFERENCES p (id))")
        conn.execute("CREATE INDEX s_a ON s (a)")
        for pragma in ("index_list", "foreign_key_list", "table_info"):
            seen.append(conn.execute(f'PRAGMA main.{pragma}("s")').fetchall())
        conn.close()
        results.append(seen)
    assert results[0] == results[1]
    assert results[1][1]  # the index is there


@pytest.mark.parametrize("how", ["uri", "bytes"])
def test_undecodable_paths_open_the_same_file(tmp_path: Path, how: str) -> None:
    opened = []
    for module, directory in ((stdlib, tmp_path / "std"), (sqlite3, tmp_path / "ow")):
        directory.mkdir()
        if how == "uri":
            conn = module.connect(f"file:{directory}/undec%E7w%F0.db", uri=True)
        else:
            conn = module.connect(os.fsencode(directory) + b"/undec\xe7w\xf0.db")
        conn.execute("CREATE TABLE t (a)")
        conn.commit()
        conn.close()
        opened.append(sorted(os.listdir(os.fsencode(directory))))
    assert b"undec\xe7w\xf0.db" in opened[0]
    assert b"undec\xe7w\xf0.db" in opened[1]


def test_a_locked_file_fails_as_the_standard_module_s_error(tmp_path: Path) -> None:
    path = str(tmp_path / "rollback.db")
    holder = stdlib.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (a)")
    holder.execute("BEGIN EXCLUSIVE")  # a rollback-journal file, locked by another tool
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn = sqlite3.connect(path, timeout=0.2)
            conn.execute("SELECT * FROM t")
        assert time.monotonic() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_prepared_statement_call_and_shared_cache_are_the_standard_module_s(
    db_path: str,
) -> None:
    conn = sqlite3.connect(db_path)
    plain = stdlib.connect(":memory:")
    for c in (conn, plain):
        with pytest.raises(TypeError):
            c()  # Connection.__call__ wants the SQL, as the standard module's does
    assert type(conn("SELECT 1")) is type(plain("SELECT 1"))  # a prepared statement
    with pytest.warns(DeprecationWarning):
        sqlite3.enable_shared_cache(False)
    conn.close()


def test_two_connections_in_one_thread_fail_fast_like_the_standard_module(db_path: str) -> None:
    first = sqlite3.connect(db_path, timeout=0.1)
    first.execute("CREATE TABLE t (a)")
    first.execute("INSERT INTO t VALUES (1)")
    second = sqlite3.connect(db_path, timeout=0.1)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        second.execute("INSERT INTO t VALUES (2)")
    assert time.monotonic() - started < 2  # SQLite's busy timeout, not transaction_timeout
    assert second.execute("SELECT count(*) FROM t").fetchone() == (0,)  # reads proceed
    first.commit()
    second.execute("INSERT INTO t VALUES (2)")
    second.commit()
    assert first.execute("SELECT count(*) FROM t").fetchone() == (2,)
    first.close()
    second.close()


def test_onewriter_s_own_table_is_left_out_of_dumps(db_path: str) -> None:
    db = onewriter.connect(db_path, role="standalone")
    db.execute_write("CREATE TABLE posts (title TEXT)")
    db.execute_write("INSERT INTO posts VALUES ('x')")
    conn = sqlite3.connect(db_path)
    dump = "\n".join(conn.iterdump())
    conn.close()
    db.close()
    assert "posts" in dump
    assert "_onewriter" not in dump


def test_connection_bound_api_is_native(db_path: str, tmp_path: Path) -> None:
    conn = sqlite3.connect(db_path, detect_types=sqlite3.PARSE_DECLTYPES)
    conn.create_function("twice", 1, lambda x: 2 * x, deterministic=True)
    conn.create_collation("reverse", lambda a, b: (a < b) - (a > b))
    conn.execute("CREATE TEMP TABLE scratch (n)")
    conn.execute("INSERT INTO scratch VALUES (twice(21))")
    conn.execute(f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS other")
    conn.execute("CREATE TABLE other.kept (d date)")
    conn.execute("INSERT INTO other.kept VALUES (?)", (__import__("datetime").date(2024, 5, 1),))
    conn.commit()
    assert conn.execute("SELECT n FROM scratch").fetchone() == (42,)
    (day,) = conn.execute("SELECT d FROM other.kept").fetchone()
    assert str(day) == "2024-05-01" and type(day).__name__ == "date"
    conn.execute("CREATE TABLE words (w)")
    conn.executemany("INSERT INTO words VALUES (?)", [("a",), ("b",)])
    conn.commit()
    ordered = conn.execute("SELECT w FROM words ORDER BY w COLLATE reverse").fetchall()
    assert ordered == [("b",), ("a",)]
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    conn.execute("SELECT count(*) FROM words").fetchone()
    assert traced == ["SELECT count(*) FROM words"]  # onewriter's own look is not traced
    conn.set_trace_callback(None)
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) > 0
    copy = stdlib.connect(":memory:")
    conn.backup(copy)
    assert copy.execute("SELECT count(*) FROM words").fetchone() == (2,)
    assert conn.serialize()[:15] == b"SQLite format 3"
    conn.execute("CREATE TABLE blobs (b BLOB)")
    conn.execute("INSERT INTO blobs VALUES (zeroblob(4))")
    conn.commit()
    with conn.blobopen("blobs", "b", 1, readonly=True) as blob:
        assert blob.read() == bytes(4)
    conn.row_factory = sqlite3.Row
    assert conn.execute("SELECT 1 AS one").fetchone()["one"] == 1
    conn.close()
