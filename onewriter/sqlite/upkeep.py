"""Checkpoints and migrations: the file-wide work every writing process may do.

Both run under the write turn, whoever runs them (the elected writer between batches, a
direct writer after its commits, any process opening the database), so a checkpoint
never races a commit of another process and a migration is applied exactly once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence

from ..config import Config, Migration
from ..turn import TurnTimeout, WriteTurn

log = logging.getLogger("onewriter.writer")

BEGIN_SQL = "BEGIN IMMEDIATE /* onewriter */"
COMMIT_SQL = "COMMIT /* onewriter */"
ROLLBACK_SQL = "ROLLBACK /* onewriter */"
USER_VERSION_SQL = "PRAGMA user_version"
SET_USER_VERSION_SQL = "PRAGMA user_version = {version:d}"  # an int, formatted as such
PASSIVE_SQL = "PRAGMA wal_checkpoint(PASSIVE)"
TRUNCATE_SQL = "PRAGMA wal_checkpoint(TRUNCATE)"
BUSY_TIMEOUT_SQL = "PRAGMA busy_timeout = {ms:d}"

#: How long housekeeping waits for the turn before leaving it for later.
_HOUSEKEEPING_WAIT = 0.1
#: Seconds between two looks at the WAL's size.
_SIZE_CHECK_INTERVAL = 0.005


def migrate(
    conn: sqlite3.Connection, migrations: Sequence[Migration], turn: WriteTurn, timeout: float
) -> int:
    """Apply the migrations past ``user_version`` under the turn; returns the version.

    The version is read while holding the turn, so two processes opening the database
    at once never both apply the same migration.
    """
    with turn.holding(timeout):
        version: int = conn.execute(USER_VERSION_SQL).fetchone()[0]
        for index in range(version, len(migrations)):
            _run_migration(conn, index + 1, migrations[index])
            log.info("applied migration %d", index + 1)
    return max(version, len(migrations))


def _run_migration(conn: sqlite3.Connection, version: int, migration: Migration) -> None:
    set_version = SET_USER_VERSION_SQL.format(version=version)
    if isinstance(migration, str):
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{migration}\n;{set_version};\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute(ROLLBACK_SQL)
            raise
        return
    conn.execute(BEGIN_SQL)
    try:
        migration(conn)
        conn.execute(set_version)
        conn.execute(COMMIT_SQL)
    except BaseException:
        if conn.in_transaction:
            conn.execute(ROLLBACK_SQL)
        raise


class Checkpointer:
    """Keeps the WAL bounded for one write connection: PASSIVE every ``checkpoint_every``
    commits (or when idle), TRUNCATE once the WAL has grown past ``wal_size_limit``."""

    def __init__(
        self, path: str, conn: sqlite3.Connection, config: Config, turn: WriteTurn
    ) -> None:
        self.path = path
        self.conn = conn
        self.config = config
        self.turn = turn
        self.enabled = config.checkpoint == "writer"
        self.checkpoints = 0
        self.commits = 0
        self._last = self._sized = time.monotonic()
        self._truncate_above = config.wal_size_limit

    def due(self, idle: bool) -> bool:
        if not self.enabled or self.commits == 0:
            return False
        if self.commits >= self.config.checkpoint_every:
            return True
        now = time.monotonic()
        if idle and now - self._last > 0.2:
            return True
        # The WAL's size is looked at every few milliseconds, not after every batch: an
        # os.stat per batch was a tenth of the writer's time under small writes.
        if now - self._sized < _SIZE_CHECK_INTERVAL:
            return False
        self._sized = now
        return self.wal_bytes() > self._truncate_above

    def oversized(self) -> bool:
        """Whether the WAL has grown past its limit (looked at every ``checkpoint_every``
        commits: direct connections keep SQLite's automatic PASSIVE checkpoints, which
        cannot reset a WAL that readers keep in use)."""
        if not self.enabled or self.commits < self.config.checkpoint_every:
            return False
        self.commits = 0
        return self.wal_bytes() > self._truncate_above

    def run(self) -> None:
        """A PASSIVE checkpoint, then TRUNCATE if the WAL is still over its limit.

        Skipped (and tried again later) when the turn is not free within a moment.
        """
        try:
            with self.turn.holding(_HOUSEKEEPING_WAIT):
                self.commits = 0
                self._last = time.monotonic()
                self.conn.execute(PASSIVE_SQL).fetchone()
                self.checkpoints += 1
                wal = self.wal_bytes()
                if wal > self._truncate_above:
                    busy = self.truncate()[0]
                    # A reader outlasted the wait: try again once the WAL has grown by
                    # another half of its limit, rather than stall every commit.
                    limit = self.config.wal_size_limit
                    self._truncate_above = wal + limit // 2 if busy else limit
        except TurnTimeout:
            return
        except sqlite3.Error as exc:
            log.warning("checkpoint failed: %s", exc)

    def truncate(self, wait_ms: int = 200) -> tuple[int, int, int]:
        """Checkpoint everything and truncate the WAL, waiting a little for readers.
        The caller holds the turn."""
        conn = self.conn
        conn.execute(BUSY_TIMEOUT_SQL.format(ms=wait_ms))
        try:
            row = conn.execute(TRUNCATE_SQL).fetchone()
        finally:
            conn.execute(BUSY_TIMEOUT_SQL.format(ms=int(self.config.busy_timeout_ms)))
        self.checkpoints += 1
        return (int(row[0]), int(row[1]), int(row[2]))

    def final(self) -> None:
        """The last checkpoint before the connection closes (skipped if the turn is busy)."""
        if not self.enabled:
            return
        try:
            with self.turn.holding(_HOUSEKEEPING_WAIT * 10):
                self.truncate(wait_ms=100)
        except (TurnTimeout, sqlite3.Error) as exc:
            log.info("final checkpoint skipped: %s", exc)

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0
