"""The funnel's exactly-once table, ``_onewriter_applied``, exists only where the funnel
recorded a write: real writer processes, real clients, the schema read with the standard
module. Exactly-once across writer death with the table made on first use is shown here
for one write and by tests/test_failover.py under repeated SIGKILLs."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from helpers import PYTHON, Children, RawClient, count, create_post, ops, writer_pid

import onewriter
from onewriter.wire import frames as proto

TABLE = "_onewriter_applied"


def schema_names(database: str) -> list[str]:
    """Every name in the database's ``sqlite_master``, as a user's listing shows it."""
    conn = sqlite3.connect(database, timeout=10)
    try:
        return sorted(name for (name,) in conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


def main_dbapi(database: str) -> None:
    """Child: two transactions through ``onewriter.dbapi``."""
    import onewriter.dbapi

    conn = onewriter.dbapi.connect(database)
    conn.execute("INSERT INTO posts (title) VALUES (?)", ("dbapi 1",))
    conn.commit()
    with conn:
        conn.execute("INSERT INTO posts (title) VALUES (?)", ("dbapi 2",))
    conn.close()
    print("DONE {}", flush=True)


def main_direct(database: str) -> None:
    """Child: direct writes (``writes="direct"``), and which process is the writer."""
    from helpers import MIGRATIONS

    db = onewriter.connect(database, ops=ops, migrations=MIGRATIONS, writes="direct")
    db.write(create_post, title=f"direct {os.getpid()}")
    report = {"pid": os.getpid(), "op_pid": db.write(writer_pid), "writer": db.stats()["pid"]}
    db.close()
    print("DONE " + json.dumps(report), flush=True)


def run_child(children: Children, main: str, database: str) -> Any:
    code = f"import sys, test_applied as t; t.{main}(*sys.argv[1:])"
    return children.start([PYTHON, "-c", code, database]).wait_json("DONE ", timeout=60)


def test_a_database_written_only_directly_never_gets_the_table(
    db_path: str, children: Children
) -> None:
    """An elected writer, ``onewriter.dbapi`` and direct ``Database.write`` in other
    processes, then a second election: the schema holds the application's tables only."""
    writer = children.writer(db_path)
    run_child(children, "main_dbapi", db_path)
    report = run_child(children, "main_direct", db_path)
    assert report["op_pid"] == report["pid"]  # the write ran in its own process
    assert report["writer"] == writer.writer_pid  # with a writer elected meanwhile
    assert TABLE not in schema_names(db_path)
    writer.stop()  # drains and hands the role back
    report = run_child(children, "main_direct", db_path)
    assert report["writer"] == report["pid"]  # elected itself: a second writer opened it
    names = schema_names(db_path)
    assert TABLE not in names
    assert "posts" in names
    assert count(db_path, "posts") == 4


def _hello(raw: RawClient, client: bytes) -> None:
    raw.send({"t": "hello", "v": proto.PROTOCOL_VERSION, "client": client})
    assert raw.recv()["t"] == "hello"


def _write(raw: RawClient, rid: int, op: str, kwargs: dict[str, Any], seq: int) -> Any:
    raw.send({"id": rid, "op": op, "kwargs": kwargs, "seq": seq, "retry": True})
    return raw.recv_id(rid)


def test_the_first_funnelled_write_makes_it_and_the_next_writer_answers_from_it(
    tmp_path: Path, children: Children
) -> None:
    """A retry before any record exists runs (nothing to look up); a failed write records
    nothing; the first committed one makes the table in its own transaction, and after a
    SIGKILL the next writer answers its retry from it without running it again."""
    database = str(tmp_path / "funnel.db")
    client = os.urandom(16)
    first = children.writer(database)
    with RawClient(first.socket_path, hello=False) as raw:
        _hello(raw, client)
        failed = _write(raw, 1, "fail", {"message": "no"}, seq=1)
        assert failed["error"]["code"] == "OP_FAILED"
        assert TABLE not in schema_names(database)
        original = _write(raw, 2, "create_post", {"title": "once"}, seq=2)
        assert original["ok"] is True
    assert TABLE in schema_names(database)
    first.kill9()
    second = children.writer(database)
    with RawClient(second.socket_path, hello=False) as raw:
        _hello(raw, client)
        again = _write(raw, 3, "create_post", {"title": "once"}, seq=2)
    assert again["result"] == original["result"]
    assert count(database, "posts") == 1


EARLIER_SCHEMA = """
CREATE TABLE _onewriter_applied (
    client BLOB NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    results BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (client, first_seq)
) WITHOUT ROWID
"""


def table_sql(database: str) -> str:
    conn = sqlite3.connect(database, timeout=10)
    try:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()
        return str(row[0])
    finally:
        conn.close()


def test_an_earlier_versions_table_is_rebuilt_and_its_records_still_answer(
    tmp_path: Path, children: Children
) -> None:
    """A database whose exactly-once table an earlier version made (``WITHOUT ROWID``)
    and that holds the record of a committed write: the next writer rebuilds it as a
    rowid table, and a retry of that write gets the recorded answer without running."""
    database = str(tmp_path / "earlier.db")
    children.writer(database).stop()  # the application's schema
    client = os.urandom(16)
    recorded = proto.pack({"id": 41, "title": "from before"})
    conn = sqlite3.connect(database)
    conn.execute(EARLIER_SCHEMA)
    conn.execute(
        "INSERT INTO _onewriter_applied VALUES (?, 7, 9, ?, ?)",
        (client, proto.pack({7: recorded, 9: recorded}), time.time()),
    )
    conn.commit()
    conn.close()
    assert "WITHOUT ROWID" in table_sql(database).upper()

    writer = children.writer(database)
    assert "WITHOUT ROWID" not in table_sql(database).upper()
    with RawClient(writer.socket_path, hello=False) as raw:
        _hello(raw, client)
        again = _write(raw, 1, "create_post", {"title": "must not run"}, seq=9)
        fresh = _write(raw, 2, "create_post", {"title": "runs"}, seq=10)
    assert again["result"] == {"id": 41, "title": "from before"}
    assert fresh["ok"] is True
    assert count(database, "posts") == 1  # only the fresh write ran
