"""Many processes running the same sqlite3-style code at once: nobody sees
``database is locked``, every row arrives, read-modify-write transactions stay exact."""

from __future__ import annotations

import json
import sqlite3 as stdlib_sqlite3
import sys
from collections import Counter

from helpers import PYTHON, Children

import onewriter
import onewriter.dbapi as sqlite3

WORKERS = 4
ITERATIONS = 40
SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, i INTEGER NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counters VALUES ('inserts', 0), ('read_modify_write', 0);
"""


def main_worker(database: str, worker: str, iterations: str) -> None:
    """Child: wait for GO, run a web-ish sqlite3 workload, report errors by message."""
    print("READY", flush=True)
    sys.stdin.readline()
    errors: Counter[str] = Counter()
    conn = sqlite3.connect(database)
    for i in range(int(iterations)):
        try:
            # Implicit transaction before DML, as the standard module opens it.
            conn.execute("INSERT INTO events (worker, i) VALUES (?, ?)", (int(worker), i))
            conn.execute("UPDATE counters SET n = n + 1 WHERE name = 'inserts'")
            conn.commit()
            # Read, then write what was read: a DEFERRED transaction of the standard
            # module gets SQLITE_BUSY here under contention, past any busy_timeout.
            conn.execute("BEGIN")
            row = conn.execute("SELECT n FROM counters WHERE name = 'read_modify_write'")
            (n,) = row.fetchone()
            conn.execute("UPDATE counters SET n = ? WHERE name = 'read_modify_write'", (n + 1,))
            conn.commit()
            conn.execute("SELECT count(*) FROM events WHERE worker = ?", (int(worker),)).fetchone()
        except sqlite3.Error as exc:
            errors[str(exc)] += 1
            conn.rollback()
    conn.close()
    print("DONE " + json.dumps(dict(errors)), flush=True)


def test_many_processes_never_see_locked(db_path: str, children: Children) -> None:
    db = onewriter.connect(db_path, migrations=[SCHEMA])
    try:
        code = "import sys, test_dbapi_processes as t; t.main_worker(*sys.argv[1:])"
        workers = [
            children.start([PYTHON, "-c", code, db_path, str(w), str(ITERATIONS)])
            for w in range(WORKERS)
        ]
        for child in workers:
            child.wait_line("READY")
        for child in workers:
            child.send("GO")
        reports = [child.wait_json("DONE ", timeout=60) for child in workers]
    finally:
        db.close()
    assert reports == [{}] * WORKERS, reports
    plain = stdlib_sqlite3.connect(db_path, timeout=10)
    try:
        events = plain.execute("SELECT count(*), count(DISTINCT worker || ':' || i) FROM events")
        assert events.fetchone() == (WORKERS * ITERATIONS, WORKERS * ITERATIONS)
        counters = dict(plain.execute("SELECT name, n FROM counters").fetchall())
    finally:
        plain.close()
    assert counters == {"inserts": WORKERS * ITERATIONS, "read_modify_write": WORKERS * ITERATIONS}
