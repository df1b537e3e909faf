"""The two write workloads of ``benchmarks/writes.py``, each as an onewriter op and as the
naive per-process transactions it is compared with.

The naive side opens its connections with the same PRAGMAs as onewriter's writer
(values taken from :class:`onewriter.Config` so the two cannot drift apart). The one
difference is checkpointing: onewriter's writer schedules its own checkpoints, while
naive connections keep SQLite's automatic checkpoint, since nobody else would run one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Literal

import onewriter

Durability = Literal["normal", "full"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    process INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    balance INTEGER NOT NULL
);
INSERT OR IGNORE INTO accounts(id, balance) VALUES (1, 0);
"""

INSERT_ITEM = "INSERT INTO items(process, payload) VALUES (?, ?)"
READ_BALANCE = "SELECT balance FROM accounts WHERE id = 1"
WRITE_BALANCE = "UPDATE accounts SET balance = ? WHERE id = 1"
PAYLOAD = "x" * 100

#: What each workload left in the database, compared with the acknowledged count.
STORED = {
    "insert": "SELECT count(*) FROM items",
    "rmw": READ_BALANCE,
}

ops = onewriter.Ops()


@ops.register
def insert_item(conn: sqlite3.Connection, process: int) -> None:
    """Workload 1: one single-row insert."""
    conn.execute(INSERT_ITEM, (process, PAYLOAD))


@ops.register
def increment_balance(conn: sqlite3.Connection, process: int) -> int:
    """Workload 2 as one op: read the balance, write it back plus one, record a row."""
    balance = conn.execute(READ_BALANCE).fetchone()[0] + 1
    conn.execute(WRITE_BALANCE, (balance,))
    conn.execute(INSERT_ITEM, (process, PAYLOAD))
    return int(balance)


def naive_connection(
    path: str, durability: Durability, *, explicit_transactions: bool
) -> sqlite3.Connection:
    """A plain connection with onewriter's PRAGMAs (see the module docstring).

    ``explicit_transactions``: autocommit mode, the caller issues BEGIN itself; otherwise
    Python's default transaction handling (``isolation_level`` left alone).
    """
    config = onewriter.Config(durability=durability)
    timeout = config.busy_timeout_ms / 1000
    if explicit_transactions:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=timeout)
    conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA journal_size_limit = {int(config.wal_size_limit)}")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute(f"PRAGMA cache_size = -{int(config.cache_size_kib)}")
    conn.execute(f"PRAGMA mmap_size = {int(config.mmap_size)}")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA foreign_keys = {'ON' if config.foreign_keys else 'OFF'}")
    return conn


def prepare(path: str, durability: Durability) -> None:
    """Create the tables and the one account before any process starts."""
    conn = naive_connection(path, durability, explicit_transactions=True)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def stored(path: str, workload: str) -> int:
    """Rows inserted, or the final balance: what the database says was applied."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(STORED[workload]).fetchone()[0])
    finally:
        conn.close()


# -- naive transactions, one call = one transaction -------------------------------------


def naive_insert(conn: sqlite3.Connection, process: int) -> None:
    """Python's default: the INSERT opens a DEFERRED transaction, commit() ends it."""
    conn.execute(INSERT_ITEM, (process, PAYLOAD))
    conn.commit()


def naive_rmw_implicit(conn: sqlite3.Connection, process: int) -> None:
    """Read-modify-write as Python's default transaction handling runs it: the SELECT
    runs outside any transaction, the UPDATE opens one. Nothing fails; updates get lost."""
    balance = conn.execute(READ_BALANCE).fetchone()[0]
    conn.execute(WRITE_BALANCE, (balance + 1,))
    conn.execute(INSERT_ITEM, (process, PAYLOAD))
    conn.commit()


def _explicit(begin: str) -> Callable[[sqlite3.Connection, int], None]:
    def transaction(conn: sqlite3.Connection, process: int) -> None:
        conn.execute(begin)
        try:
            balance = conn.execute(READ_BALANCE).fetchone()[0]
            conn.execute(WRITE_BALANCE, (balance + 1,))
            conn.execute(INSERT_ITEM, (process, PAYLOAD))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    transaction.__name__ = f"naive_rmw_{begin.lower().replace(' ', '_')}"
    return transaction


#: ``BEGIN`` (DEFERRED, SQLite's and Python's default kind) takes a read snapshot first;
#: its UPDATE must upgrade to a write lock and fails with ``database is locked`` when
#: another process committed since the snapshot (the busy handler cannot help there).
naive_rmw_deferred = _explicit("BEGIN")
#: ``BEGIN IMMEDIATE`` takes the write lock first: correct, but processes queue on the
#: busy handler's sleeps.
naive_rmw_immediate = _explicit("BEGIN IMMEDIATE")
