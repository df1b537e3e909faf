"""The funnel's exactly-once records, in a table that exists only once it is needed.

One row per client per batch holds ``{seq: encoded result}`` for that client's writes
committed in the batch (a row per request cost ~3 us each). It is a rowid table: a
batch's rows go at the end of the table, and only their small index entries land by
client (keyed by client alone, as ``WITHOUT ROWID``, a batch from 8 clients touched 8
leaf pages: three times the WAL). The table is created by the first batch that records a
funnelled write, in that batch's transaction: a database written only directly
(``Database.write`` under the turn, ``onewriter.dbapi``) never shows it in its schema.
Driven by the engine on the writer's thread only.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..sqlite.upkeep import ROLLBACK_SQL
from ..wire import frames as proto

SCHEMA = """
CREATE TABLE IF NOT EXISTS _onewriter_applied (
    client BLOB NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    results BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (client, first_seq)
)
"""
LAYOUT = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '_onewriter_applied'"
#: An earlier version's table (``WITHOUT ROWID``) rebuilt as above, its records kept.
UPGRADE = f"""
ALTER TABLE _onewriter_applied RENAME TO _onewriter_applied_before;
{SCHEMA};
INSERT INTO _onewriter_applied (client, first_seq, last_seq, results, at)
    SELECT client, first_seq, last_seq, results, at FROM _onewriter_applied_before;
DROP TABLE _onewriter_applied_before;
"""
LOOKUP = (
    "SELECT results FROM _onewriter_applied WHERE client = ? AND first_seq <= ? AND last_seq >= ?"
)
RECORD = (
    "INSERT INTO _onewriter_applied (client, first_seq, last_seq, results, at) "
    "VALUES (?, ?, ?, ?, ?)"
)
ACK = "DELETE FROM _onewriter_applied WHERE client = ? AND last_seq < ?"
EXPIRE = "DELETE FROM _onewriter_applied WHERE at < ?"
#: A client's acks are applied once they have moved on by this many sequence numbers.
ACK_PRUNE_STEP = 256


class Applied:
    """Looks up, records and forgets committed request ids on the write connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # Whether the table is known to exist. False is always safe (it is looked up,
        # or created IF NOT EXISTS); True only once a transaction that has it committed.
        self.exists = self._look()
        self._creating = False
        self._ack_floor: dict[bytes, int] = {}
        self._acks_due: dict[bytes, int] = {}

    def _layout(self) -> str | None:
        """The table's ``CREATE TABLE`` statement, or ``None`` while there is none."""
        row = self.conn.execute(LAYOUT).fetchone()
        return None if row is None else str(row[0])

    def _look(self) -> bool:
        return self._layout() is not None

    def outdated(self) -> bool:
        """Whether the table is an earlier version's (``WITHOUT ROWID``)."""
        layout = self._layout()
        return layout is not None and "WITHOUT ROWID" in layout.upper()

    def upgrade(self) -> None:
        """Rebuild an earlier version's table in one transaction (call under the write
        turn; looked at again there): retries of writes it recorded still get their
        first answer."""
        if not self.outdated():
            return
        try:
            self.conn.executescript(f"BEGIN IMMEDIATE;{UPGRADE}COMMIT;")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute(ROLLBACK_SQL)
            raise

    def lookup(self, client: bytes, seq: Any) -> bytes | None:
        """The stored reply of a write this client sent before, if it committed."""
        if not self.exists and not self._creating:
            # Retries are rare: look again, in case another writer of this file made it.
            self.exists = self._look()
            if not self.exists:
                return None
        for (blob,) in self.conn.execute(LOOKUP, (client, seq, seq)):
            results = proto.unpack(blob)
            if seq in results:
                found: bytes = results[seq]
                return found
        return None

    def record(self, by_client: dict[bytes, dict[int, bytes]]) -> None:
        """Store this batch's committed ids and results (inside its transaction), and
        forget the acknowledged ones; :meth:`committed` or :meth:`abandoned` follows."""
        if by_client:
            if not self.exists and not self._creating:
                self.conn.execute(SCHEMA)
                self._creating = True
            now = time.time()
            self.conn.executemany(
                RECORD,
                [
                    (client, min(results), max(results), proto.pack(results), now)
                    for client, results in by_client.items()
                ],
            )
        if self._acks_due:
            due, self._acks_due = self._acks_due, {}
            if self.exists or self._creating:
                self.conn.executemany(ACK, due.items())

    def committed(self) -> None:
        if self._creating:
            self._creating = False
            self.exists = True

    def abandoned(self) -> None:
        """The transaction was rolled back: a table it created is gone with it (and
        one dropped behind the writer's back fails a batch once, then is made again)."""
        self._creating = False
        self.exists = False

    def note_ack(self, client: bytes, ack: int) -> None:
        """The client has seen replies for every seq below ``ack``: those ids may go."""
        if ack - self._ack_floor.get(client, 0) >= ACK_PRUNE_STEP:
            self._ack_floor[client] = ack
            self._acks_due[client] = ack

    def expire(self, before: float) -> None:
        """Forget records older than ``before`` (call under the write turn)."""
        if self.exists:
            self.conn.execute(EXPIRE, (before,))
